"""Family ``cipher`` (seen): Caesar-style letter rotation (encode or decode a short message).

Tests probing a silent direction convention and reading a key format from an error.
Hidden conventions:
- seen variant: a positive ``shift`` rotates letters *backwards* (a -> z for 1); the probe "abc" by 1
  returning "zab" reveals it.
- evolved variant: renamed tool and arguments; the key must be a *letter* (a=0, b=1, ...), which the error
  for a number spells out; rotation runs forwards.
Decoy: a tool with the same arguments that rotates the *character positions* ("hello", 1 -> "elloh").
"""

from __future__ import annotations

import random
import re
from collections.abc import Generator
from typing import Any

from toolmaster.envs.environment import CallRecord
from toolmaster.envs.task import Task
from toolmaster.envs.tool import Tool
from toolmaster.worlds.scripted import Step
from toolmaster.worlds.toolworld.common import (
    DOCS_CALL,
    DOCS_RETRY,
    FamilySpec,
    NameGen,
    Play,
    TaskDraft,
    Variant,
    gold,
    load_json,
    say,
    schema,
)

WORDS = (
    "amber", "harbor", "lantern", "meadow", "orbit", "pepper", "quiet", "river", "saddle", "timber",
    "velvet", "walnut", "canyon", "falcon", "garden", "island", "jungle", "kettle", "mirror", "nectar",
)  # fmt: skip
LETTERS = "abcdefghijklmnopqrstuvwxyz"

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


def make_variant(rng: random.Random, names: NameGen, evolved: bool) -> Variant:
    prefix = names.prefix()
    if evolved:
        main = names.name(prefix, ("scr", "kyr", "msk"))
        decoy = names.name(prefix, ("spn", "msr", "whl"))
        p_text, p_key = rng.choice(("msg", "body")), rng.choice(("key", "k"))
        key_type: Any = "string"
    else:
        main = names.name(prefix, ("rot", "csr", "ltr"))
        decoy = names.name(prefix, ("rtx", "trot", "spin"))
        p_text, p_key = rng.choice(("text", "s")), rng.choice(("shift", "by"))
        key_type = "integer"
    conv = {"backwards": not evolved, "letter_key": evolved}

    def key_of(value: Any) -> int:
        if conv["letter_key"]:
            text = str(value).strip().lower()
            if len(text) != 1 or text not in LETTERS:
                raise ValueError(f"bad {p_key} {value!r}; {p_key} is one letter: a=0, b=1, c=2, ..., z=25")
            return LETTERS.index(text)
        return int(value)

    def main_fn(**kwargs: Any) -> str:
        k = key_of(kwargs[p_key])
        return rotate(str(kwargs[p_text]), -k if conv["backwards"] else k)

    def decoy_fn(**kwargs: Any) -> str:
        text = str(kwargs[p_text])
        value = kwargs[p_key]
        k = (
            LETTERS.index(value.lower())
            if isinstance(value, str) and value.lower() in LETTERS
            else int(value)
        )
        if not text:
            return text
        k %= len(text)
        return text[k:] + text[:k]

    tools = [
        Tool(
            main,
            rng.choice(_DOCS[evolved]),
            schema({p_text: ("string", "text"), p_key: (key_type, "shift key" if evolved else "shift")}),
            main_fn,
            family="cipher",
        ),
        Tool(
            decoy,
            rng.choice(_DECOY_DOCS[evolved]),
            schema(
                {
                    p_text: ("string", "text"),
                    p_key: (["string", "integer"] if evolved else "integer", "amount"),
                }
            ),
            decoy_fn,
            family="cipher",
        ),
    ]
    return Variant(
        family="cipher",
        key="cipher~evolved" if evolved else "cipher",
        evolved=evolved,
        tools=tools,
        roles={"main": main, "decoy": decoy},
        params={"main": {"text": p_text, "key": p_key}, "decoy": {"text": p_text, "key": p_key}},
        conv=conv,
    )


_Q_ENC = (
    "Encode '{t}' with a Caesar shift of {k} (a becomes {a}). Answer with the encoded text only.",
    "Apply a forward Caesar shift of {k} to '{t}'. Answer with the result only.",
)
_Q_DEC = (
    "The message '{c}' was encoded with a forward Caesar shift of {k}. Decode it. Answer with the plain text only.",
    "Decode '{c}'; it was made by shifting each letter {k} forward. Answer with the plain text only.",
)


def _key_arg(variant: Variant, k: int) -> Any:
    return LETTERS[k % 26] if variant.conv["letter_key"] else k


def make_task(variant: Variant, rng: random.Random) -> TaskDraft:
    plain = " ".join(rng.sample(WORDS, rng.choice((1, 2))))
    k = rng.randint(1, 25)
    mode = rng.choice(("encode", "decode"))
    cipher = rotate(plain, k)
    # the tool's own shift that rotates forwards by the wanted amount
    want = k if mode == "encode" else -k
    tool_k = -want if variant.conv["backwards"] else want
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
            gold(variant.roles["main"], variant.args("main", text=text, key=_key_arg(variant, tool_k)))
        ],
        intent={"mode": mode, "text": text, "k": k},
        convention="positive shift rotates backwards"
        if variant.conv["backwards"]
        else "key is a letter a=0..z=25",
        initial_state={},
    )


def _text(observation: str) -> str:
    data = load_json(observation)
    return data if isinstance(data, str) else observation


def letter_keys(observation: str) -> bool:
    return re.search(r"\ba=0\b", observation) is not None


def expert(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main = variant.roles["main"]
    intent = task.metadata["intent"]
    text, k = intent["text"], intent["k"]
    want = k if intent["mode"] == "encode" else -k
    letters = False
    direction = 1
    as_text = variant.param_type("main", "key") == "string"  # the schema says the key is a string
    thought = play.say(
        (
            "Which way does {tool} rotate? Probe 'abc' with {kk}: forward gives 'bcd'.",
            "Check the direction on 'abc' shifted by {kk} before touching the message.",
            "Test the cipher on a known input: 'abc' by {kk}.",
        ),
        tool=main,
        kk=1,
    )
    record = yield from play.trial(main, variant.args("main", text="abc", key="1" if as_text else 1), thought)
    if record is not None and not record.ok and letter_keys(record.observation):
        letters = True
        again = play.say(
            (
                "Keys are letters (a=0). Redo the probe with 'b' (1).",
                "The error says a=0, b=1, ...; probe 'abc' with key 'b'.",
            )
        )
        record = yield from play.trial(main, variant.args("main", text="abc", key="b"), again)
    if record is not None and record.ok:
        out = _text(record.observation)
        if out[:1].isalpha():
            step = (ord(out[0].lower()) - ord("a")) % 26
            direction = -1 if step == 25 else 1
        if direction < 0:
            act = play.say(
                (
                    "'abc' became '{o}': positive shifts go backwards. Use {s} to move {w:+d}.",
                    "The tool rotates the other way ('{o}'), so send {s}.",
                ),
                o=out,
                s=-want,
                w=want,
            )
        else:
            act = play.say(
                ("'abc' became '{o}': forward rotation. Apply {w:+d}.", "Direction is normal. Execute."),
                o=out,
                w=want,
            )
    else:
        act = play.say(
            ("No trials; run the cipher as documented.", "Trials are off; apply {w:+d} directly."), w=want
        )
    shift = direction * want
    key: Any = LETTERS[shift % 26] if letters else (str(shift) if as_text else shift)
    result = yield from play.call(main, variant.args("main", text=text, key=key), act)
    if not result.ok and letter_keys(result.observation):
        fix = play.say(("Keys are letters with a=0; {w:+d} is '{c}'.",), w=shift, c=LETTERS[shift % 26])
        result = yield from play.call(main, variant.args("main", text=text, key=LETTERS[shift % 26]), fix)
    yield play.answer(_text(result.observation) if result.ok else None)


def docs_only(variant: Variant, task: Task, rng: random.Random) -> Generator[Step, CallRecord, None]:
    play = Play(rng)
    main = variant.roles["main"]
    intent = task.metadata["intent"]
    want = intent["k"] if intent["mode"] == "encode" else -intent["k"]
    key: Any = str(want) if variant.param_type("main", "key") == "string" else want
    result = yield from play.call(
        main, variant.args("main", text=intent["text"], key=key), play.say(DOCS_CALL, tool=main)
    )
    if not result.ok:
        result = yield from play.call(
            main, variant.args("main", text=intent["text"], key=str(want % 26)), play.say(DOCS_RETRY)
        )
    yield play.answer(_text(result.observation) if result.ok else None)


FAMILY = FamilySpec("cipher", "ciph", True, make_variant, make_task, expert, docs_only)
