"""The plugin author's reference: every hook, and what a hook may read, as markdown.

Generated from :mod:`ssl_core.engine.hookspecs` (signatures, docstrings, examples,
:data:`~ssl_core.engine.hookspecs.ARGUMENTS`) and from :data:`READABLE`, so the page
cannot drift from the code: ``sslrun plugins --hooks --markdown`` prints it,
``docs/hooks.md`` is its output (a test keeps the two equal, and another evaluates
every expression of :data:`READABLE` inside a real hook).
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ssl_core.engine import hookspecs
from ssl_core.engine.catalogue import TRAINING_HOOKS

HEADER = """# Hooks

Every hook sslrun calls, in the order a run calls them, generated from
`ssl_core/engine/hookspecs.py` by `sslrun plugins --hooks --markdown > docs/hooks.md`.
`docs/writing-plugins.md` builds a plugin step by step.

*Catalogue* hooks are module functions of the module a plugin package names as its
`sslrun.plugins` entry point; they run once, when sslrun starts. *Training* hooks are
methods of a `Plugin` subclass, marked with `@hookimpl`; they run for the plugins a
recipe enables, in their `order`. An implementation takes only the arguments it names
(`def sslrun_epoch_end(self, metrics)` is fine), and a name no hook has is refused
when the plugin is registered.

```text
sslrun_setup(run)
for each epoch:
    sslrun_epoch_start(run, epoch)
    for each iteration:
        sslrun_pre_batch(run, batch)
        terms = sslrun_collect_losses(run, batch)     # summed: one optimizer step
        sslrun_after_step(run, batch)
    evaluation: sslrun_evaluation_model(run)          # plugin models scored too
    sslrun_epoch_end(run, epoch, metrics)
    checkpoint
sslrun_run_end(run, summary)
```

On resume, `sslrun_setup` (and, for a checkpoint taken mid-epoch, that epoch's
`sslrun_epoch_start`) run again before the checkpoint overwrites every registered
state.

The examples below assume `import copy`, `import torch`, `import torch.nn.functional
as F` and `from ssl_core import hookimpl`.
"""


@dataclass(frozen=True)
class Readable:
    """Something a hook may read or call, with what it is (``expression`` runs in tests)."""

    expression: str
    meaning: str


#: What a training hook may read from ``run`` and ``batch`` (the public surface).
READABLE: dict[str, tuple[Readable, ...]] = {
    "run": (
        Readable("run.recipe.name", "the recipe's name"),
        Readable("run.recipe.seed", "the seed"),
        Readable("run.recipe.train.epochs", "epochs to train (every `[train]` key likewise)"),
        Readable("run.recipe.train.iterations_per_epoch", "steps per epoch"),
        Readable("run.recipe.optim.lr", "the first epoch's learning rate (`[optim]` keys)"),
        Readable("run.recipe.data.name", "the dataset (`[data]` keys; `model` likewise)"),
        Readable("run.settings('supervised')", "an enabled plugin's validated settings"),
        Readable("run.epoch", "the current epoch, from 0"),
        Readable("run.num_classes", "K, the number of classes"),
        Readable("run.data.input_shape", "one input's shape, e.g. (1, 28, 28)"),
        Readable("run.data.labeled_x", "the labeled inputs (`labeled_y` their labels)"),
        Readable("run.data.unlabeled_x", "the unlabeled inputs"),
        Readable("run.data.test_x", "the test inputs (`test_y`; `val_x`, `val_y` likewise)"),
        Readable("run.model", "the classifier for forwards whose loss is back-propagated"),
        Readable("run.classifier", "the bare classifier: no-grad and input-gradient passes"),
        Readable("run.optimizer", "the classifier's optimizer"),
        Readable("run.device", "where tensors live"),
        Readable("run.out_dir", "the run folder (`None` when nothing is written)"),
        Readable("run.world.rank", "this process's rank (`world.size`, `world.is_main`)"),
        Readable("run.warn", "`run.warn(text)`: a one-line warning shown and kept"),
        Readable("run.register_state", "`run.register_state(name, obj)`: checkpoint `obj`"),
        Readable("run.evaluate", "`run.evaluate(model, split)`: accuracy on test or val"),
    ),
    "batch": (
        Readable("batch.epoch", "the epoch, from 0"),
        Readable("batch.iteration", "the step within the epoch, from 0"),
        Readable("batch.global_step", "the step since the run began, from 0"),
        Readable("batch.x_labeled", "the labeled inputs of this step (`y_labeled` labels)"),
        Readable("batch.x_unlabeled", "the unlabeled inputs of this step"),
        Readable("batch.shared", "results one plugin leaves for later ones (by key)"),
        Readable("batch.terms", "the step's loss terms by name (from `sslrun_after_step`)"),
        Readable("batch.stats", "per-step numbers to average and log (tensors)"),
    ),
}


@dataclass(frozen=True)
class Hook:
    """One hook specification as the reference shows it."""

    name: str
    arguments: dict[str, str]  # name -> annotation
    returns: str
    when: str
    example: str

    @property
    def training(self) -> bool:
        return self.name in TRAINING_HOOKS

    @property
    def signature(self) -> str:
        return f"{self.name}({', '.join(self.arguments)})"


def hooks() -> list[Hook]:
    """Every hook specification, in the order of ``hookspecs.py`` (the order a run calls them)."""
    found = []
    for name, function in vars(hookspecs).items():
        if name.startswith("sslrun_") and callable(function):
            found.append(_hook(name, function))
    return found


def _hook(name: str, function: Callable[..., Any]) -> Hook:
    signature = inspect.signature(function)
    arguments = {p: str(param.annotation) for p, param in signature.parameters.items()}
    doc = inspect.cleandoc(function.__doc__ or "")
    when, _, example = doc.partition("\nExample::\n")
    return Hook(
        name, arguments, str(signature.return_annotation), when.strip(), textwrap.dedent(example)
    )


def hook_reference() -> str:
    """``docs/hooks.md``: the lifecycle, each hook, and what a hook may read."""
    parts = [HEADER]
    for title, training in (("Catalogue hooks", False), ("Training hooks", True)):
        parts.append(f"## {title}\n")
        parts += [_section(hook) for hook in hooks() if hook.training == training]
    parts.append(
        "## What a hook may read\n\nFrom `run` (every training hook) and `batch` (the batch"
        " hooks); the plugin's own validated settings are `self.settings`. Anything else"
        " on them is internal and may change.\n"
    )
    for name, readables in READABLE.items():
        rows = [f"| `{r.expression}` | {r.meaning} |" for r in readables]
        parts.append("\n".join([f"| `{name}` | |", "| --- | --- |", *rows]) + "\n")
    return "\n".join(parts).rstrip() + "\n"


def _section(hook: Hook) -> str:
    returns = "nothing" if hook.returns == "None" else f"`{hook.returns}`"
    rows = [
        f"| `{name}` | `{annotation}` | {_markdown(hookspecs.ARGUMENTS[name])} |"
        for name, annotation in hook.arguments.items()
    ]
    table = "\n".join(["| argument | type | what it is |", "| --- | --- | --- |", *rows])
    return (
        f"### `{hook.signature}`\n\n{_markdown(hook.when)}\n\n{table}\n\n"
        f"Returns {returns}.\n\n```python\n{hook.example.strip()}\n```\n"
    )


def _markdown(text: str) -> str:
    """reST roles and literals of a docstring as markdown code (``x`` and :class:`~a.B`)."""
    for role in (":class:", ":meth:", ":mod:", ":func:", ":data:"):
        while role + "`" in text:
            start = text.index(role + "`")
            end = text.index("`", start + len(role) + 1)
            target = text[start + len(role) + 1 : end]
            shown = target.removeprefix("~").rsplit(".", 1)[-1] if "~" in target else target
            text = text[:start] + f"`{shown}`" + text[end + 1 :]
    return text.replace("``", "`")


def hook_table() -> list[tuple[str, str, str, str]]:
    """Each hook for ``sslrun plugins --hooks``: name(arguments), kind, returns, when."""
    return [
        (
            hook.signature,
            "training" if hook.training else "catalogue",
            "-" if hook.returns == "None" else hook.returns,
            " ".join(_markdown(hook.when).split("\n\n")[0].split()),
        )
        for hook in hooks()
    ]
