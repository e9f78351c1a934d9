"""How fast the engine evaluates ticket histories.

Evaluates 100,000 synthetic histories (5-20 events each) as of one instant, on one core,
beside a baseline measured in the same run: sorting and de-duplicating the same events,
the least any evaluation must do. Last line:
``clocks: <tickets/s> tickets/s, <clocks/s> clocks/s, <ratio>x the sorting baseline``
"""

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and its calendar.py would stand in
# for the standard library's: put the repository there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)


import argparse
import datetime as dt
import gc
import random
import time

from bench.histories import START, history, ruleset
from rules import evaluate
from rules.events import timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rules = ruleset()
    rng = random.Random(args.seed)
    histories = [history(rng, n) for n in range(args.tickets)]
    events = sum(len(h) for h in histories)
    now = START + dt.timedelta(days=2 * 365 + 30)
    evaluate("warm-up", histories[0], rules, now)  # build the calendars' tables once
    # A million input events are not what a service holds at once: keep the collector from
    # scanning them again and again (it still runs on what evaluation allocates).
    gc.collect()
    gc.freeze()

    began = time.process_time()
    for h in histories:
        timed(h, now)
    baseline = time.process_time() - began

    clocks = 0
    began = time.process_time()
    for h in histories:
        clocks += len(evaluate("zd", h, rules, now).clocks)
    elapsed = time.process_time() - began

    print(
        f"histories: {len(histories)} tickets, {events} events ({events / len(histories):.1f} each)"
    )
    print(f"baseline (sort + de-duplicate): {baseline:.2f} s")
    print(f"evaluate: {elapsed:.2f} s, {clocks} clocks")
    print(
        f"clocks: {len(histories) / elapsed:,.0f} tickets/s, {clocks / elapsed:,.0f} clocks/s, "
        f"{elapsed / baseline:.1f}x the sorting baseline"
    )


if __name__ == "__main__":
    main()
