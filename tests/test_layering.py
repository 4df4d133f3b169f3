"""The package's architecture, enforced: imports flow one way through the stages, and no module cycles.

format -> policy -> rollout -> rewards -> train / eval -> grpo -> demo -> cli (docs/architecture.md). Every
import counts, including those inside functions: a lazy import of a higher stage is still a dependency.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own stage and the stages before it. Most specific prefix wins.
STAGES = {
    "gotr1": 0, "gotr1.kernels": 0, "gotr1._canvas": 0, "gotr1.progress": 0, "gotr1.threads": 0, "gotr1.validation": 0,
    "gotr1.chain": 1, "gotr1.layout": 1, "gotr1.prompt_sets": 1, "gotr1.images": 1,
    "gotr1.policy": 2,
    "gotr1.rollout": 3,
    "gotr1.rewards": 4, "gotr1.metrics": 4,
    "gotr1.train": 5, "gotr1.eval": 5,
    "gotr1.grpo": 6,
    "gotr1.demo": 7,
    "gotr1.cli": 8,
}


def stage_of(module: str) -> int | None:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in STAGES and (end > 1 or len(parts) == 1):
            return STAGES[".".join(parts[:end])]
    return None


def source_modules() -> dict[str, Path]:
    """Module name -> file, for the package and the kernels (installed as gotr1.kernels)."""
    found = {}
    for folder, package in ((ROOT / "gotr1", "gotr1"), (ROOT / "kernels", "gotr1.kernels")):
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The gotr1 modules ``module`` imports (a name imported from a package counts as the submodule when it is one)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("gotr1")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("gotr1"):
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & known
            out |= subs if subs and len(subs) == len(node.names) else {target}
    return out - {module}


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a higher stage, and modules no stage claims."""
    problems = []
    for module, targets in sorted(graph.items()):
        mine = stage_of(module)
        if mine is None:
            problems.append(f"{module}: belongs to no stage (add it to STAGES and docs/architecture.md)")
            continue
        for target in sorted(targets):
            theirs = stage_of(target)
            if theirs is not None and theirs > mine:
                problems.append(f"{module} (stage {mine}) imports {target} (stage {theirs})")
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


@pytest.fixture(scope="module")
def graph():
    modules = source_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def test_imports_flow_from_lower_stages_to_higher_ones(graph):
    assert "gotr1.grpo.trainer" in graph and "gotr1.kernels.grpo_loss" in graph
    assert layering_violations(graph) == []


def test_no_import_cycles(graph):
    assert import_cycles(graph) == []


def test_the_checks_catch_a_planted_violation_and_cycle(graph):
    planted = {**graph, "gotr1.policy.model": graph["gotr1.policy.model"] | {"gotr1.grpo.trainer"}}
    assert "gotr1.policy.model (stage 2) imports gotr1.grpo.trainer (stage 6)" in layering_violations(planted)
    assert any("gotr1.policy.model" in group and "gotr1.grpo.trainer" in group for group in import_cycles(planted))
    assert layering_violations({"gotr1.newroom.thing": set()}) == [
        "gotr1.newroom.thing: belongs to no stage (add it to STAGES and docs/architecture.md)"]


def test_kernels_do_not_import_the_package_above_them(graph):
    for module, targets in graph.items():
        if module.startswith("gotr1.kernels"):
            assert all(t.startswith("gotr1.kernels") for t in targets), (module, targets)


def test_importing_the_bare_source_tree_says_how_to_install(tmp_path):
    """Without the install, gotr1.kernels (kernels/) and the compiled canvas are missing: say so at once."""
    import subprocess
    import sys

    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import gotr1"
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0
    assert "ImportError" in done.stderr and "--no-build-isolation -e ." in done.stderr
