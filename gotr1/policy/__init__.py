"""Stage: the policy. Janus-Pro loading and GoT tokens, LoRA, FSDP sharding, the token layout every stage
shares and the teacher-forced forward (see ``docs/architecture.md``)."""

from gotr1.policy.model import GoTTokens, got_token_ids, janus_parts, load_policy, tiny_janus
from gotr1.policy.tokens import LogProbs, TokenBatch, encode_prompt, format_prompt

__all__ = ["GoTTokens", "LogProbs", "TokenBatch", "encode_prompt", "format_prompt", "got_token_ids", "janus_parts",
           "load_policy", "tiny_janus"]
