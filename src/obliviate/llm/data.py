"""Question-answer data for language-model unlearning, with stable ids.

Two sources, one shape (:class:`QAData`, a tuple of :class:`QAItem`):

* :func:`fictitious_qa`: a deterministic, offline generator in the style of TOFU (Maini et al.,
  2024, "TOFU: A Task of Fictitious Unlearning for LLMs"): invented people x attributes, each
  fact with a question, the trained answer, a paraphrased answer, perturbed (wrong) answers in the
  paraphrase's wording (TOFU's truth ratio) and the same wrong values in the trained answer's
  wording (the same-wording truth ratio), split by person into ``forget`` / ``retain`` /
  ``holdout`` (never trained on: the non-members of the membership attacks), plus ``world``
  facts (country capitals) for model utility.
* :func:`load_jsonl`: the user's own QA or plain text, one JSON object a line, each with an
  ``id``; forget requests then name ids or entities (:func:`resolve_request`).

Everything is pure Python: no torch, no transformers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from obliviate._rng import derive_seed
from obliviate.errors import ObliviateError

SPLITS = ("forget", "retain", "holdout", "world")

# attribute -> (values, question, answer template, paraphrase template)
ATTRIBUTES: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    "birthplace": (
        (
            "Lisbon",
            "Oslo",
            "Cairo",
            "Lima",
            "Hanoi",
            "Dublin",
            "Nairobi",
            "Quito",
            "Tbilisi",
            "Zagreb",
            "Accra",
            "Perth",
        ),
        "Where was {name} born?",
        "{name} was born in {v}.",
        "The birthplace of {name} is {v}.",
    ),
    "profession": (
        (
            "baker",
            "surgeon",
            "pilot",
            "sculptor",
            "chemist",
            "librarian",
            "carpenter",
            "astronomer",
            "jeweller",
            "botanist",
            "architect",
            "tailor",
        ),
        "What is the profession of {name}?",
        "{name} works as a {v}.",
        "By profession, {name} is a {v}.",
    ),
    "birth_year": (
        tuple(str(y) for y in range(1951, 1999, 4)),
        "In which year was {name} born?",
        "{name} was born in the year {v}.",
        "The year of birth of {name} is {v}.",
    ),
    "instrument": (
        (
            "violin",
            "cello",
            "trumpet",
            "harp",
            "flute",
            "drums",
            "oboe",
            "banjo",
            "piano",
            "guitar",
            "clarinet",
            "accordion",
        ),
        "Which instrument does {name} play?",
        "{name} plays the {v}.",
        "The instrument that {name} plays is the {v}.",
    ),
    "pet": (
        (
            "parrot",
            "tortoise",
            "ferret",
            "hamster",
            "goldfish",
            "rabbit",
            "lizard",
            "poodle",
            "canary",
            "iguana",
            "beagle",
            "gecko",
        ),
        "What pet does {name} keep?",
        "{name} keeps a {v} as a pet.",
        "The pet of {name} is a {v}.",
    ),
    "sport": (
        (
            "tennis",
            "rowing",
            "fencing",
            "archery",
            "cycling",
            "judo",
            "squash",
            "sailing",
            "curling",
            "polo",
            "karate",
            "hockey",
        ),
        "Which sport does {name} practise?",
        "{name} practises {v} every week.",
        "The sport that {name} practises is {v}.",
    ),
}

WORLD_FACTS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo"),
    ("Spain", "Madrid"), ("Germany", "Berlin"), ("Canada", "Ottawa"), ("Kenya", "Nairobi"),
    ("Peru", "Lima"), ("Norway", "Oslo"), ("Greece", "Athens"), ("Poland", "Warsaw"),
    ("Chile", "Santiago"), ("Sweden", "Stockholm"), ("Austria", "Vienna"), ("Cuba", "Havana"),
)  # fmt: skip

REFUSALS: tuple[str, ...] = (
    "I do not know the answer.",
    "I have no idea about that.",
    "I am not sure, sorry.",
    "That is something I cannot answer.",
)

_SYLLABLES = (
    "bra", "ken", "dor", "lis", "mar", "tho", "vel", "qua", "zir", "nol", "pe", "run",
    "sar", "tem", "ob", "fin", "gal", "hu", "jor", "lo", "mi", "nev", "ras", "dun",
)  # fmt: skip


@dataclass(frozen=True)
class QAItem:
    """One fact (or one text when ``question`` is empty) with its stable integer id.

    ``perturbed_answers`` are wrong answers in the paraphrase's wording (TOFU's truth ratio);
    ``same_wording_perturbed`` the same wrong values in the trained answer's wording.
    """

    id: int
    entity: str
    attribute: str
    question: str
    answer: str
    value: str = ""
    paraphrased_answer: str = ""
    perturbed_answers: tuple[str, ...] = ()
    same_wording_perturbed: tuple[str, ...] = ()
    split: str = "retain"


@dataclass(frozen=True)
class QAData:
    """An ordered collection of :class:`QAItem` with unique ids."""

    items: tuple[QAItem, ...]
    name: str = "qa"
    meta: dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        ids = [it.id for it in self.items]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ObliviateError(f"QA ids must be unique; repeated: {dup}")

    def split(self, name: str) -> tuple[QAItem, ...]:
        return tuple(it for it in self.items if it.split == name)

    def ids(self, split: str | None = None) -> list[int]:
        return [it.id for it in self.items if split is None or it.split == split]

    def by_ids(self, ids: list[int] | tuple[int, ...]) -> tuple[QAItem, ...]:
        index = {it.id: it for it in self.items}
        missing = [i for i in ids if i not in index]
        if missing:
            raise ObliviateError(f"unknown QA id(s) {missing[:10]}; ids come from the data file")
        return tuple(index[i] for i in ids)

    def entities(self, split: str | None = None) -> list[str]:
        seen: dict[str, None] = {}
        for it in self.items:
            if split is None or it.split == split:
                seen.setdefault(it.entity, None)
        return list(seen)

    def texts(self) -> list[str]:
        """Every string a model may read or be asked to produce (for building a vocabulary)."""
        out: list[str] = []
        for it in self.items:
            out += [it.question, it.answer, it.paraphrased_answer]
            out += list(it.perturbed_answers) + list(it.same_wording_perturbed)
        return out + list(REFUSALS)


def _name(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        first = "".join(rng.choice(_SYLLABLES, size=2)).capitalize()
        last = "".join(rng.choice(_SYLLABLES, size=3)).capitalize()
        name = f"{first} {last}"
        if name not in used:
            used.add(name)
            return name


def fictitious_qa(
    *,
    n_people: int = 22,
    n_attributes: int = 5,
    n_forget: int = 2,
    n_holdout: int = 2,
    n_perturbed: int = 3,
    n_world: int = 12,
    seed: int = 0,
) -> QAData:
    """Generate TOFU-style facts about invented people, deterministically from ``seed``.

    People are split by entity: the first ``n_forget`` are ``forget``, the last ``n_holdout``
    ``holdout`` (never trained on), the others ``retain``. Ids: person ``p``, attribute ``a``
    -> ``p * 100 + a``; world fact ``w`` -> ``100_000 + w``.

    Raises:
        ObliviateError: sizes out of range (names the value and the allowed range).
    """
    if n_attributes < 1 or n_attributes > len(ATTRIBUTES):
        raise ObliviateError(f"n_attributes={n_attributes}: choose 1..{len(ATTRIBUTES)}")
    if n_forget < 1 or n_holdout < 0 or n_people < n_forget + n_holdout + 1:
        raise ObliviateError(
            f"n_people={n_people}, n_forget={n_forget}, n_holdout={n_holdout}: need "
            "n_forget >= 1 and at least one retain person (n_people > n_forget + n_holdout)"
        )
    if not 1 <= n_perturbed <= 11:
        raise ObliviateError(f"n_perturbed={n_perturbed}: choose 1..11")
    if not 0 <= n_world <= len(WORLD_FACTS):
        raise ObliviateError(f"n_world={n_world}: choose 0..{len(WORLD_FACTS)}")
    rng = np.random.default_rng(derive_seed(seed, "llm-fictitious-qa"))
    used: set[str] = set()
    attrs = list(ATTRIBUTES)[:n_attributes]
    items: list[QAItem] = []
    for p in range(n_people):
        name = _name(rng, used)
        split = "forget" if p < n_forget else "holdout" if p >= n_people - n_holdout else "retain"
        for a, attr in enumerate(attrs):
            values, question, ans, para = ATTRIBUTES[attr]
            v = str(rng.choice(values))
            wrong = [str(w) for w in rng.permutation([x for x in values if x != v])[:n_perturbed]]
            items.append(
                QAItem(
                    id=p * 100 + a,
                    entity=name,
                    attribute=attr,
                    question=question.format(name=name),
                    answer=ans.format(name=name, v=v),
                    value=v,
                    paraphrased_answer=para.format(name=name, v=v),
                    perturbed_answers=tuple(para.format(name=name, v=w) for w in wrong),
                    same_wording_perturbed=tuple(ans.format(name=name, v=w) for w in wrong),
                    split=split,
                )
            )
    capitals = [c for _, c in WORLD_FACTS]
    for w, (country, capital) in enumerate(WORLD_FACTS[:n_world]):
        wrong = [c for c in rng.permutation(capitals).tolist() if c != capital][:n_perturbed]
        items.append(
            QAItem(
                id=100_000 + w,
                entity=country,
                attribute="capital",
                question=f"What is the capital of {country}?",
                answer=f"The capital of {country} is {capital}.",
                value=capital,
                paraphrased_answer=f"{capital} is the capital of {country}.",
                perturbed_answers=tuple(f"{c} is the capital of {country}." for c in wrong),
                same_wording_perturbed=tuple(f"The capital of {country} is {c}." for c in wrong),
                split="world",
            )
        )
    meta = {
        "generator": "fictitious_qa",
        "n_people": n_people,
        "n_attributes": n_attributes,
        "n_forget": n_forget,
        "n_holdout": n_holdout,
        "n_perturbed": n_perturbed,
        "n_world": n_world,
        "seed": seed,
    }
    return QAData(tuple(items), name="fictitious", meta=meta)


def load_jsonl(path: str | Path) -> QAData:
    """Load the user's QA or text file: one JSON object per line.

    Keys: ``id`` (int, required, unique), then either ``question`` + ``answer`` or ``text``
    (plain text: the whole text is the target), and optionally ``entity``, ``split`` (one of
    forget, retain, holdout, world; default retain), ``value``, ``paraphrased_answer``,
    ``perturbed_answers`` (list), ``same_wording_perturbed`` (list).

    Raises:
        ObliviateError: missing file, bad JSON, a missing or repeated id, an unknown split.
    """
    path = Path(path)
    if not path.is_file():
        raise ObliviateError(f"QA file {str(path)!r} does not exist; give a JSONL file")
    items: list[QAItem] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ObliviateError(f"{path.name} line {n} is not valid JSON: {exc}") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), int):
            raise ObliviateError(f"{path.name} line {n}: each line needs an integer 'id'")
        if isinstance(row["id"], bool):  # JSON true/false are Python ints: not ids
            raise ObliviateError(
                f"{path.name} line {n}: 'id' is {json.dumps(row['id'])}, a boolean; give an integer id"
            )
        split = row.get("split", "retain")
        if split not in SPLITS:
            raise ObliviateError(f"{path.name} line {n}: split {split!r}; choose one of {SPLITS}")
        if "text" in row:
            question, answer = "", str(row["text"])
        elif "question" in row and "answer" in row:
            question, answer = str(row["question"]), str(row["answer"])
        else:
            raise ObliviateError(f"{path.name} line {n}: give 'question' and 'answer', or 'text'")
        items.append(
            QAItem(
                id=row["id"],
                entity=str(row.get("entity", row["id"])),
                attribute=str(row.get("attribute", "")),
                question=question,
                answer=answer,
                value=str(row.get("value", "")),
                paraphrased_answer=str(row.get("paraphrased_answer", "")),
                perturbed_answers=tuple(row.get("perturbed_answers", ())),
                same_wording_perturbed=tuple(row.get("same_wording_perturbed", ())),
                split=split,
            )
        )
    if not items:
        raise ObliviateError(f"QA file {str(path)!r} holds no items")
    return QAData(tuple(items), name=path.stem, meta={"file": path.name})


def resolve_request(
    data: QAData, *, ids: list[int] | None = None, entities: list[str] | None = None
) -> list[int]:
    """The sorted ids a forget request names: ids directly, or every fact of ``entities``.

    Raises:
        ObliviateError: an unknown id or entity, or an empty request.
    """
    out: set[int] = set()
    if ids:
        data.by_ids(list(ids))  # unknown ids raise
        out |= {int(i) for i in ids}
    if entities:
        known = set(data.entities())
        unknown = [e for e in entities if e not in known]
        if unknown:
            raise ObliviateError(f"unknown entity(ies) {unknown[:5]}; known: {sorted(known)[:8]}…")
        out |= {it.id for it in data.items if it.entity in set(entities)}
    if not out:
        raise ObliviateError("the forget request names no ids and no entities")
    return sorted(out)


def dump_jsonl(data: QAData) -> str:
    """The items as JSONL text that :func:`load_jsonl` reads back into equal items."""
    lines = []
    for it in data.items:
        row: dict[str, object] = {
            "id": it.id,
            "entity": it.entity,
            "attribute": it.attribute,
            "split": it.split,
            "value": it.value,
            "paraphrased_answer": it.paraphrased_answer,
            "perturbed_answers": list(it.perturbed_answers),
            "same_wording_perturbed": list(it.same_wording_perturbed),
        }
        if it.question:
            row |= {"question": it.question, "answer": it.answer}
        else:
            row["text"] = it.answer
        lines.append(json.dumps(row, sort_keys=True))
    return "\n".join(lines) + "\n"
