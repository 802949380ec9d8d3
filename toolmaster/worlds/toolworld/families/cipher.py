"""Family ``cipher`` (seen): Caesar-style letter rotation (encode or decode a short message).

Tests probing a silent direction convention and reading a key format from an error.
Hidden conventions (12 seen, 6 evolved):
- one key step moves letters by a silent stride: backwards (a -> z for 1) or 3, 5 or 7 letters either way
  (evolved: forwards, backwards or 3); the probe "abc" by 1 returning "zab" or "def" reveals it;
- seen keys are integers (the schema says integer or string), evolved keys a *letter* (a=0, b=1, ... or
  a=1, b=2, ...), which the error for a number spells out.
Decoy: a tool with the same arguments that rotates the *character positions* ("hello", 1 -> "elloh").
"""

from __future__ import annotations

import random
import re
from collections.abc import Generator
from typing import Any

from toolmaster.envs.environment import CallRecord
from toolmaster.envs.task import Task
from toolmaster.worlds.scripted import Step
from toolmaster.worlds.toolworld import feedback as fb
from toolmaster.worlds.toolworld import quirks as q
from toolmaster.worlds.toolworld.common import (
    FamilySpec,
    NameGen,
    Play,
    TaskDraft,
    Variant,
    gold,
    load_json,
    say,
)

FAMILY_NAME = "cipher"
WORDS = (
    "amber", "harbor", "lantern", "meadow", "orbit", "pepper", "quiet", "river", "saddle", "timber",
    "velvet", "walnut", "canyon", "falcon", "garden", "island", "jungle", "kettle", "mirror", "nectar",
)  # fmt: skip
LETTERS = "abcdefghijklmnopqrstuvwxyz"

_TOOL_NAMES = {
    "main": (("rot", "csr", "ltr"), ("scr", "kyr", "msk")),
    "decoy": (("rtx", "trot", "spin"), ("spn", "msr", "whl")),
}
_ARG_NAMES = {
    "text": (("text", "s", "plain", "msg_in"), ("msg", "body", "payload")),
    "key": (("shift", "by", "k", "offset"), ("key", "kk", "secret")),
}
_DOCS = {
    False: ("Rotate the letters of text by shift.", "Caesar rotation of a text.", "Letter shifter."),
    True: ("Scramble or unscramble a message with a key.", "Rotational letter cipher with key."),
}
_DECOY_DOCS = {
    False: ("Rotate text by shift.", "Text rotation."),
    True: ("Rotate a message by key.", "Message spinner."),
}


def rotate(text: str, k: int) -> str:
    out = []
    for ch in text:
        if ch.isalpha() and ch.lower() in LETTERS:
            base = ord("a") if ch.islower() else ord("A")
            out.append(chr(base + (ord(ch) - base + k) % 26))
        else:
            out.append(ch)
    return "".join(out)


# how far one unit of the key moves a letter (invertible mod 26; 1 is the documented reading, -1 backwards)
_STRIDES = {False: (-1, 3, -3, 5, -5, 7), True: (1, -1, 3)}
# how the key is written: an integer (schema integer or string), or a letter with a=0 or a=1
_KEYS = {False: ("int", "intstr"), True: ("letter0", "letter1")}


def key_value(key_form: str, value: Any, pname: str) -> int:
    """The key's number under ``key_form``; a wrong form raises an error that spells the form out."""
    if key_form.startswith("letter"):
        base = int(key_form[-1])
        text = str(value).strip().lower()
        if len(text) != 1 or text not in LETTERS:
            raise ValueError(
                f"bad {pname} {value!r}; {pname} is one letter: a={base}, b={base + 1}, c={base + 2}, ..."
            )
        return LETTERS.index(text) + base
    return int(value)


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    roles, p = q.draw_names(rng, names, evolved, _TOOL_NAMES, _ARG_NAMES)
    conv = {"stride": rng.choice(_STRIDES[evolved]), "key": rng.choice(_KEYS[evolved])}
    key_type = "integer" if conv["key"] == "int" else "string"

    def main_fn(**kwargs: Any) -> str:
        return rotate(
            str(kwargs[p["text"]]), conv["stride"] * key_value(conv["key"], kwargs[p["key"]], p["key"])
        )

    def decoy_fn(**kwargs: Any) -> str:
        text = str(kwargs[p["text"]])
        value = kwargs[p["key"]]
        k = (
            LETTERS.index(value.lower())
            if isinstance(value, str) and value.lower() in LETTERS
            else int(value)
        )
        if not text:
            return text
        k %= len(text)
        return text[k:] + text[:k]

    text_arg = {"text": ("string", "text")}
    key_doc = "shift key" if evolved else "shift"
    main = q.ToolSpec(rng.choice(_DOCS[evolved]), {**text_arg, "key": (key_type, key_doc)}, main_fn)
    decoy = q.ToolSpec(
        rng.choice(_DECOY_DOCS[evolved]), {**text_arg, "key": (["string", "integer"], "amount")}, decoy_fn
    )
    return q.variant(FAMILY_NAME, evolved, roles, p, conv, main=main, decoy=decoy)


_Q_ENC = (
    "Encode '{t}' with a Caesar shift of {k} (a becomes {a}). Answer with the encoded text only.",
    "Apply a forward Caesar shift of {k} to '{t}'. Answer with the result only.",
)
_Q_DEC = (
    "The message '{c}' was encoded with a forward Caesar shift of {k}. Decode it. Answer with the plain text only.",
    "Decode '{c}'; it was made by shifting each letter {k} forward. Answer with the plain text only.",
)


def inverse(step: int) -> int | None:
    """The multiplier that undoes ``step`` mod 26 (None when the step is not invertible)."""
    return next((x for x in range(1, 26) if (x * step) % 26 == 1), None)


def key_arg(key_form: str, shift: int) -> Any:
    """The key argument meaning ``shift`` in ``key_form``."""
    if key_form.startswith("letter"):
        return LETTERS[(shift - int(key_form[-1])) % 26]
    return str(shift) if key_form == "intstr" else shift


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    plain = " ".join(rng.sample(WORDS, rng.choice((1, 2))))
    k = rng.randint(1, 25)
    mode = rng.choice(("encode", "decode"))
    cipher = rotate(plain, k)
    # the tool's own key that rotates forwards by the wanted amount
    want = k if mode == "encode" else -k
    tool_k = (want * (inverse(variant.conv["stride"] % 26) or 1)) % 26
    text = plain if mode == "encode" else cipher
    if mode == "encode":
        query = say(rng, _Q_ENC, t=plain, k=k, a=LETTERS[k])
    else:
        query = say(rng, _Q_DEC, c=cipher, k=k)
    return TaskDraft(
        kind=mode,
        query=query,
        answer=cipher if mode == "encode" else plain,
        gold_calls=[
            gold(
                variant.roles["main"],
                variant.args("main", text=text, key=key_arg(variant.conv["key"], tool_k)),
            )
        ],
        intent={"mode": mode, "text": text, "k": k},
        convention=f"one key step moves {variant.conv['stride']} letters; key written as {variant.conv['key']}",
        initial_state={},
    )


def _text(observation: str) -> str:
    data = load_json(observation)
    return data if isinstance(data, str) else observation


def letter_base(observation: str) -> int | None:
    """0 or 1 when an error says keys are letters ('a=0, b=1, ...'), else None."""
    match = re.search(r"\ba=(\d)\b", observation)
    return int(match.group(1)) if match else None


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main = variant.roles["main"]
    intent = task.metadata["intent"]
    text, k = intent["text"], intent["k"]
    want = k if intent["mode"] == "encode" else -k
    as_text = variant.param_type("main", "key") == "string"  # the schema says the key is a string
    form = "intstr" if as_text else "int"
    thought = play.say(
        (
            "How does {tool} rotate? Probe 'abc' with {kk}: a plain Caesar shift gives 'bcd'.",
            "Check what one key step does on 'abc' before touching the message.",
            "Test the cipher on a known input: 'abc' by {kk}.",
        ),
        tool=main,
        kk=1,
    )
    record = yield from play.trial(main, variant.args("main", text="abc", key=key_arg(form, 1)), thought)
    base = letter_base(record.observation) if record is not None and not record.ok else None
    if base is not None:
        form = f"letter{base}"
        again = play.say(
            (
                "Keys are letters (a={b}). Redo the probe with '{c}' (1).",
                "The error says a={b}, ...; probe 'abc' with key '{c}'.",
            ),
            b=base,
            c=key_arg(form, 1),
        )
        record = yield from play.trial(main, variant.args("main", text="abc", key=key_arg(form, 1)), again)
    step = 1
    if record is not None and record.ok:
        out = _text(record.observation)
        if out[:1].isalpha():
            step = (ord(out[0].lower()) - ord("a")) % 26
        undo = inverse(step)
        if undo is None:
            yield play.answer(None)
            return
        shift = (want * undo) % 26
        if step != 1:
            act = play.say(
                (
                    "'abc' became '{o}': one key step moves {st} letters. To move {w:+d} send {s}.",
                    "The tool rotates differently ('{o}'), so {w:+d} needs key {s}.",
                ),
                o=out,
                st=step if step <= 13 else step - 26,
                s=shift,
                w=want,
            )
        else:
            act = play.say(
                (
                    "'abc' became '{o}': plain forward rotation. Apply {w:+d}.",
                    "Direction is normal. Execute.",
                ),
                o=out,
                w=want,
            )
    else:
        shift = want
        act = play.say(
            ("No trials; run the cipher as documented.", "Trials are off; apply {w:+d} directly."), w=want
        )
    result = yield from play.call(main, variant.args("main", text=text, key=key_arg(form, shift)), act)
    base = letter_base(result.observation) if not result.ok else None
    if base is not None:
        form = f"letter{base}"
        fix = play.say(
            ("Keys are letters with a={b}; {w:+d} is '{c}'.",), b=base, w=shift, c=key_arg(form, shift)
        )
        result = yield from play.call(main, variant.args("main", text=text, key=key_arg(form, shift)), fix)
    yield play.answer(_text(result.observation) if result.ok else None)


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play, intent = Play(rng), task.metadata["intent"]
    want = intent["k"] if intent["mode"] == "encode" else -intent["k"]
    key: Any = str(want) if variant.param_type("main", "key") == "string" else want
    result = yield from play.call_as_documented(variant, text=intent["text"], key=key)
    if not result.ok:
        result = yield from play.call_as_documented(
            variant, retry=True, text=intent["text"], key=str(want % 26)
        )
    yield play.answer(_text(result.observation) if result.ok else None)


# -------------------------------------------------------------- feedback levels (feedback.py)
FEEDBACK = {"stride": fb.SILENT, "key": fb.NAMES_FIX}


def feedback(variant: Variant, kind: str) -> dict[str, str]:
    """The stride unless it is the documented 1 (evolved only); letter keys, whose error spells them out."""
    stride = () if variant.conv["stride"] == 1 else ("stride",)
    key = ("key",) if variant.conv["key"].startswith("letter") else ()
    return fb.quirks(FEEDBACK, *stride, *key)


FAMILY = FamilySpec(FAMILY_NAME, "ciph", True, make_variant, make_task, expert, docs_only, feedback)
