"""Arithmetic in a spoken question, computed exactly: "What is 7.25 minus 3.8?" -> 7.25 - 3.8 = 3.45.

A small language model guesses sums token by token and gets the second decimal wrong; Python's decimal module does
not. `note` finds a simple calculation in a transcript, in digits or in words ("one hundred minus thirty seven",
"seven point two five", "1,000 divided by 8", "15 percent of 80", "subtract 4 from 10"), and writes its exact
result as a note for the model to read out.
"""

from __future__ import annotations

import re
from decimal import Decimal, DivisionByZero, InvalidOperation, localcontext

ONES = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
# Infix operators, longest first: (words, symbol).
INFIX = [
    (("multiplied", "by"), "*"), (("divided", "by"), "/"), (("take", "away"), "-"), (("percent", "of"), "%"),
    (("plus",), "+"), (("minus",), "-"), (("times",), "*"), (("over",), "/"), (("x",), "*"),
    (("+",), "+"), (("-",), "-"), (("*",), "*"), (("×",), "*"), (("/",), "/"), (("÷",), "/"),
]  # fmt: skip
# Spoken commands: verb A (joiner) B -> A op B ("subtract A from B" is B - A).
COMMANDS = {"add": ({"and", "to"}, "+"), "multiply": ({"by", "and"}, "*"), "divide": ({"by"}, "/"),
            "subtract": ({"from"}, "-")}  # fmt: skip
SPOKEN = {"+": "plus", "-": "minus", "*": "times", "/": "divided by", "%": "percent of"}
DECIMALS = 4  # places kept for a result that does not terminate ("about 0.3333")
_TOKEN = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+|[a-z]+|[+\-*/×÷]")


def tokens(text: str) -> list[str]:
    """Lower-case words, numbers in digits (commas of thousands dropped) and operator signs."""
    text = text.lower().replace("\u2212", "-").replace("-", " - ")
    return [t.replace(",", "") if t[0].isdigit() else t for t in _TOKEN.findall(text)]


def number(words: list[str], i: int) -> tuple[Decimal, int] | None:
    """The number that starts at WORDS[i] and the index after it, or None."""
    if i >= len(words):
        return None
    if words[i][0].isdigit() or words[i][0] == ".":
        return Decimal(words[i]), i + 1
    total, current, j, seen = 0, 0, i, False
    while j < len(words):
        w = words[j]
        if w in ONES and (current % 100 == 0 or current % 100 in TENS.values() and ONES[w] < 10):
            current += ONES[w]
        elif w in TENS and current % 100 in (0, *ONES.values()):
            current = current * 100 + TENS[w] if current % 100 else current + TENS[w]  # "nineteen ninety"
        elif w in SCALES and (seen or w == "hundred" and j > i and words[j - 1] == "a"):
            current = max(current, 1) * SCALES[w]
            if w != "hundred":
                total, current = total + current, 0
        elif w == "a" and j + 1 < len(words) and words[j + 1] in SCALES and not seen:
            current = 1
        elif (
            w == "and"
            and words[j - 1] in SCALES
            and j + 1 < len(words)
            and (words[j + 1] in ONES or words[j + 1] in TENS)
        ):
            pass  # "one hundred and five"
        else:
            break
        seen, j = seen or w != "a", j + 1
    if not seen:
        return None
    value = Decimal(total + current)
    if j + 1 < len(words) and words[j] == "point" and words[j + 1] in ONES and ONES[words[j + 1]] < 10:
        digits, j = "", j + 1
        while j < len(words) and words[j] in ONES and ONES[words[j]] < 10:
            digits, j = digits + str(ONES[words[j]]), j + 1
        value += Decimal("0." + digits)
    return value, j


def operator(words: list[str], i: int) -> tuple[str, int] | None:
    for spoken, symbol in INFIX:
        if tuple(words[i : i + len(spoken)]) == spoken:
            return symbol, i + len(spoken)
    return None


def expression(words: list[str], i: int) -> tuple[list[Decimal | str], int] | None:
    """NUMBER (OPERATOR NUMBER)+ or a spoken command, starting at WORDS[i]."""
    if words[i] in COMMANDS:
        joiners, symbol = COMMANDS[words[i]]
        a = number(words, i + 1)
        if a and a[1] < len(words) and words[a[1]] in joiners and (b := number(words, a[1] + 1)):
            return ([b[0], symbol, a[0]] if words[i] == "subtract" else [a[0], symbol, b[0]]), b[1]
        return None
    first = number(words, i)
    if first is None:
        return None
    parts: list[Decimal | str] = [first[0]]
    j = first[1]
    while (op := operator(words, j)) and (n := number(words, op[1])):
        parts += [op[0], n[0]]
        j = n[1]
    return (parts, j) if len(parts) > 1 else None


def evaluate(parts: list[Decimal | str]) -> Decimal:
    """Left to right, times and divided by before plus and minus ("percent of" binds like times)."""
    with localcontext() as ctx:
        ctx.prec = 34
        ctx.traps[DivisionByZero] = ctx.traps[InvalidOperation] = True
        terms: list[Decimal | str] = [parts[0]]
        for op, value in zip(parts[1::2], parts[2::2]):
            if op in "*/%":
                left = terms.pop()
                terms.append(left * value if op == "*" else left / value if op == "/" else left * value / 100)
            else:
                terms += [op, value]
        result = terms[0]
        for op, value in zip(terms[1::2], terms[2::2]):
            result = result + value if op == "+" else result - value
        return result


def spoken(value: Decimal) -> str:
    """VALUE in digits as a person writes it: 3.45, 96, 0.3 (no exponent, no trailing zeros)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def find(text: str) -> tuple[str, Decimal | None] | None:
    """The first calculation in TEXT, as (the calculation in digits, its exact result); result None: divided by
    zero. None when TEXT holds no calculation."""
    words = tokens(text)
    for i in range(len(words)):
        found = expression(words, i)
        if found:
            parts = found[0]
            said = " ".join(spoken(p) if isinstance(p, Decimal) else SPOKEN[p] for p in parts)
            try:
                return said, evaluate(parts)
            except (DivisionByZero, InvalidOperation):
                return said, None
    return None


def note(text: str) -> str | None:
    """A note with the exact result of the calculation in TEXT, for the language model; None if there is none.

    A plain line, not a bracketed "[Calculator: ...]": with brackets in its prompt, the 1.5B model filled what it
    did not know with them ("Your name is [Calculator: 123].")."""
    found = find(text)
    if found is None:
        return None
    said, result = found
    if result is None:
        return f"Calculator: {said} has no answer, one cannot divide by zero."
    rounded = result.quantize(Decimal(1).scaleb(-DECIMALS))
    if rounded == result:
        return f"Calculator: {said} = {spoken(result)} exactly."
    return f"Calculator: {said} = about {spoken(rounded)}."


def with_note(text: str) -> str:
    """TEXT with the exact result of its calculation appended, if it has one."""
    found = note(text)
    return f"{text}\n{found}" if found else text
