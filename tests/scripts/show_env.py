"""Prints what a script sees of how it was started, then exits with a code."""

import json
import sys

info = {
    "argv": sys.argv,
    "path0": sys.path[0],
    "name": __name__,
    "file": __file__,
    "package": __package__,
    "spec": repr(__spec__),
    "is_main": __name__ == "__main__",
}
print(json.dumps(info, sort_keys=True))
if __name__ == "__main__":
    for i in range(3):
        print("loop", i)
    sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
