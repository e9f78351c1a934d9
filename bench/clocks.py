"""How fast the engine evaluates ticket histories.

Evaluates 100,000 synthetic histories (5-20 events each) as of one instant, on one core,
beside a baseline measured in the same run: sorting and de-duplicating the same events,
the least any evaluation must do. Last line:
``clocks: <tickets/s> tickets/s, <clocks/s> clocks/s, <ratio>x the sorting baseline``
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from histories import START, history, ruleset  # noqa: E402

from rules import evaluate  # noqa: E402
from rules.events import timed  # noqa: E402


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
