"""One math grading worker: reads [gold, prediction text] JSON lines on stdin, answers
["ok", correct, extracted] or ["error", why] on stdout, after a first ["ready"].

Run by path with `python -I` (math_grader.py starts it), so it imports math-verify and nothing of
glimprouter: the package pulls in LangGraph, OpenAI's client and the datasets library, seconds of
start and a gigabyte and a half of address space per worker.
"""

import ctypes
import json
import logging
import resource
import signal
import sys

import psutil

PR_SET_PDEATHSIG = 1


def main(check_memory_mb: int) -> None:
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the grader
    # math-verify warns once that its own timeouts are off; they are, on purpose: the grader
    # kills a check that runs too long.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from math_verify import parse, verify

    # The bound is on what a check adds to the address space the interpreter and its libraries
    # already reserve, which differs from machine to machine.
    memory = psutil.Process().memory_info().vms + (check_memory_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    reply(["ready"])
    for line in sys.stdin:
        gold, prediction_text = json.loads(line)
        try:
            gold_parsed = parse(f"${gold}$", parsing_timeout=None)
            prediction = parse(prediction_text, parsing_timeout=None)
            extracted = str(prediction[-1]) if prediction else None
            correct = bool(verify(gold_parsed, prediction, timeout_seconds=None))
            reply(["ok", correct, extracted])
        except Exception as error:  # noqa: BLE001 - whatever sympy raises is this answer's failure
            reply(["error", f"{type(error).__name__}: {str(error)[:200]}"])


def reply(message: list) -> None:
    # A lone surrogate in an extracted answer must not break the line: JSON escapes it.
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(int(sys.argv[1]))
