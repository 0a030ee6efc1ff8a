"""Question prompts: a stable id -> the chat messages asking for N atomic actions.

Each prompt asks for exactly N short atomic actions in temporal order, the way a
storyboard breaks a script into shots. Ids are stable: they are part of every row's key.
"""

from __future__ import annotations

from dataclasses import dataclass

from storyboard_common.errors import UserError

SYSTEM = (
    "You are a storyboard artist who breaks a human action into the short, visible, atomic "
    "actions that a camera would film one after another."
)


@dataclass(frozen=True)
class Prompt:
    id: str
    template: str  # fields: {action}, {n}

    def messages(self, action: str, n: int) -> tuple[dict[str, str], ...]:
        return (
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": self.template.format(action=action, n=n)},
        )


PROMPTS: dict[str, Prompt] = {
    p.id: p
    for p in (
        Prompt(
            "storyboard",
            'Draw a storyboard of a video of a person doing "{action}". Break it into exactly '
            "{n} shots, in the order they happen. Describe each shot as one short atomic "
            "action of 3 to 8 words that is visible in the frame. Answer with a numbered list "
            "of {n} lines and nothing else.",
        ),
        Prompt(
            "steps",
            'What are the {n} steps, in temporal order, of the action "{action}"? Give exactly '
            "{n} short atomic actions (a verb phrase of at most 8 words each), one per line, "
            "numbered 1 to {n}, with no explanation.",
        ),
        Prompt(
            "visual",
            "A video shows a person {action}. Describe what is seen in {n} consecutive moments "
            "of it, from start to end, each as one short phrase naming a single body movement "
            "or interaction. Reply with exactly {n} numbered lines.",
        ),
        Prompt(
            "json",
            'Decompose the action "{action}" into exactly {n} atomic sub-actions in the order a '
            "person performs them, each a short phrase of at most 8 words. Reply only with a "
            "JSON array of {n} strings.",
        ),
    )
}


def select_prompts(ids: str | None) -> list[Prompt]:
    """Prompts by comma-separated ids (`--prompts`); all of them when None."""
    if not ids:
        return list(PROMPTS.values())
    chosen = [i.strip() for i in ids.split(",") if i.strip()]
    unknown = [i for i in chosen if i not in PROMPTS]
    if unknown:
        raise UserError(
            f"unknown --prompts id(s) {', '.join(unknown)}; known: {', '.join(PROMPTS)}."
        )
    return [PROMPTS[i] for i in dict.fromkeys(chosen)]
