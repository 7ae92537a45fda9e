"""A logger set up inside main() the way experiment scripts do: a file handler
and a stdout handler kept in locals, with formatters and levels, a second
logger for metrics that does not propagate, and a module-level logger with a
rotating file handler (set up by module code that resume does not run again)."""

import hashlib
import logging
import logging.handlers
import random
import sys
import time

events = logging.getLogger("events")
events.setLevel(logging.INFO)
events.propagate = False
events.addHandler(logging.handlers.RotatingFileHandler("events.log", mode="w", maxBytes=700, backupCount=50))


def main():
    log = logging.getLogger("experiment")
    log.setLevel(logging.DEBUG)
    to_file = logging.FileHandler("train.log", mode="w")  # a redo from before this line starts it afresh
    to_file.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    to_screen = logging.StreamHandler(sys.stdout)
    to_screen.setLevel(logging.INFO)
    to_screen.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(to_file)
    log.addHandler(to_screen)
    metrics = logging.getLogger("experiment.metrics")
    metrics.propagate = False
    metrics.addHandler(logging.FileHandler("metrics.log", mode="w"))
    rng = random.Random(5)
    weight = 0.0
    for step in range(18):
        target = 3.0 + rng.gauss(0, 0.1)
        weight += 0.2 * (target - weight)
        log.debug("gradient %.9f", target - weight)
        log.info("step %d weight %.9f", step, weight)
        metrics.info("%d,%.9f", step, weight)
        events.info("step %d target %.9f with some padding to make the rotating file roll over now and then", step, target)
        time.sleep(0.04)
    print("sha256", hashlib.sha256(repr(weight).encode()).hexdigest())


if __name__ == "__main__":
    main()
