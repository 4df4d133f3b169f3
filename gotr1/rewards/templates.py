"""The judge's prompts, as data: one template per reward, with GoT-R1's rubrics and reply formats.

GoT-R1 (arXiv 2505.17022, Sec. 3.3) judges four relations with Qwen2.5-VL; the rubric wording below is
ours, following the criteria the paper lists for each reward:

- ``semantic`` (R_sem): the chain with its boxes removed against the prompt; completeness, faithfulness,
  consistency, clarity; 0-10, reply ``{"score": ...}``.
- ``spatial`` (R_spa): the chain's boxes drawn on a blank canvas, names at each box's top-left corner,
  against the prompt; 0-10.
- ``grounding`` (R_RI): the paper's own instruction; Qwen2.5-VL answers
  ``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]`` in pixels of its resized input.
- ``prompt_image`` (R_PI): the generated image against the prompt, compositional accuracy; 0-10.

Messages follow the structure both judge backends take: ``{"role": ..., "content": [{"type": "text",
"text": ...}, {"type": "image", "image": PIL.Image | uint8 array}]}``, the image before the text as in
Qwen2.5-VL's own examples.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

SYSTEM_PROMPT = "You are a helpful assistant."
SCORE_REPLY = '{"score": <integer from 0 to 10>}'
GROUNDING_REPLY = '[{"bbox_2d": [x1, y1, x2, y2], "label": "<object>"}]'


@dataclass(frozen=True)
class PromptTemplate:
    """One judge prompt.

    Attributes
    ----------
    name : str
        The reward it serves (``semantic``, ``spatial``, ``grounding``, ``prompt_image``).
    text : str
        A ``str.format`` template; literal braces are doubled.
    with_image : bool
        Whether the request carries one image (the layout canvas or the generated image).
    reply_format : str
        The reply the template asks for, for documentation and tests.
    scale : int or None
        The top of the score rubric (10), or None when the reply is not a score.
    """

    name: str
    text: str
    with_image: bool
    reply_format: str
    scale: int | None

    @property
    def fields(self) -> tuple[str, ...]:
        """The placeholders ``render`` needs, in order of appearance."""
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.text) if f)

    def render(self, **values: str) -> str:
        """The prompt text with every placeholder filled; a missing or unknown field raises ``ValueError``."""
        missing = set(self.fields) - set(values)
        extra = set(values) - set(self.fields)
        if missing or extra:
            raise ValueError(
                f"template {self.name!r} takes fields {self.fields}, "
                f"got missing={sorted(missing)} extra={sorted(extra)}"
            )
        return self.text.format(**values)

    def request(self, image=None, **values: str) -> list[dict]:
        """The chat request (system and user messages) for one judge call."""
        if self.with_image and image is None:
            raise ValueError(f"template {self.name!r} needs an image, got image=None")
        if not self.with_image and image is not None:
            raise ValueError(f"template {self.name!r} takes no image")
        content = [{"type": "image", "image": image}] if self.with_image else []
        content.append({"type": "text", "text": self.render(**values)})
        return [
            {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {"role": "user", "content": content},
        ]


SEMANTIC = PromptTemplate(
    name="semantic",
    with_image=False,
    reply_format=SCORE_REPLY,
    scale=10,
    text=(
        "You are judging the plan a text-to-image model wrote before drawing a picture.\n"
        'Text prompt: "{prompt}"\n'
        'Plan (a description of the picture to draw): "{reasoning}"\n\n'
        "Rate how well the plan serves the prompt on a scale from 0 to 10, weighing four criteria:\n"
        "1. Completeness: every object, attribute (colour, shape, texture, number) and relation the prompt asks "
        "for is in the plan.\n"
        "2. Faithfulness: nothing in the plan contradicts the prompt.\n"
        "3. Consistency: the plan does not contradict itself.\n"
        "4. Clarity: the plan is specific, unambiguous and easy to follow.\n"
        "Give 10 only when all four are fully met, and 0 when the plan is unrelated to the prompt.\n"
        'Reply with JSON only, in the form {{"score": <integer from 0 to 10>}}.'
    ),
)

SPATIAL = PromptTemplate(
    name="spatial",
    with_image=True,
    reply_format=SCORE_REPLY,
    scale=10,
    text=(
        "The image is the layout planned for a picture: each box marks where an object will be drawn, and the "
        "object's name is written at the box's top-left corner.\n"
        'Text prompt: "{prompt}"\n\n'
        "Rate how well the layout arranges the prompt's objects on a scale from 0 to 10, weighing:\n"
        "1. Every object the prompt names has a box.\n"
        "2. Relative positions follow the prompt's spatial terms strictly (left of, right of, above, below, "
        "on top of, next to, ...).\n"
        "3. Box sizes and proportions are plausible for the objects and the scene.\n"
        "4. Boxes overlap only where the prompt implies it.\n"
        "Give 0 when the layout ignores the prompt.\n"
        'Reply with JSON only, in the form {{"score": <integer from 0 to 10>}}.'
    ),
)

GROUNDING = PromptTemplate(
    name="grounding",
    with_image=True,
    reply_format=GROUNDING_REPLY,
    scale=None,
    text="Locate the {object}, report the bbox coordinates in JSON format.",
)

PROMPT_IMAGE = PromptTemplate(
    name="prompt_image",
    with_image=True,
    reply_format=SCORE_REPLY,
    scale=10,
    text=(
        "You are judging whether a generated image follows its text prompt.\n"
        'Text prompt: "{prompt}"\n\n'
        "Rate the image's compositional accuracy on a scale from 0 to 10, weighing:\n"
        "1. Objects: every object the prompt names is present, in the requested number.\n"
        "2. Attributes: colours, shapes, textures and other attributes match the prompt and belong to the right "
        "objects.\n"
        "3. Spatial relations: positions follow the prompt's spatial terms strictly (left of, right of, above, "
        "below, on top of, next to, ...).\n"
        "Ignore style and image quality unless the prompt asks for them. Give 0 when the image is unrelated to "
        "the prompt.\n"
        'Reply with JSON only, in the form {{"score": <integer from 0 to 10>}}.'
    ),
)

TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (SEMANTIC, SPATIAL, GROUNDING, PROMPT_IMAGE)}
