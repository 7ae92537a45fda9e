"""Hard-link the pure distributions of one virtualenv into another.

    python ci/share_pure_dists.py FROM_SITE_PACKAGES TO_SITE_PACKAGES

torch's CUDA build pulls in about 3 GB of nvidia-* wheels whose files are the
same for every Python version (wheel tag py3-none-*). Installing them again for
the second Python doubles the download and the disk used, and a CI machine with
a nearly full disk fails there. Linking them (and copying their small
.dist-info) makes pip find them installed and skip them. Only distributions
whose files all lie inside site-packages are shared (no scripts in bin/), and
only those the target lacks. Without hard links (another file system) nothing
is shared and pip installs as usual.
"""

import os
import shutil
import sys
from pathlib import Path

MIN_BYTES = 10 * 2**20  # small pure packages are not worth a note in the log


def is_pure(dist_info: Path) -> bool:
    try:
        wheel = (dist_info / "WHEEL").read_text()
    except OSError:
        return False
    tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
    return bool(tags) and all(t.split("-")[1] == "none" and t.startswith(("py3-", "py2.py3-")) for t in tags)


def recorded_files(dist_info: Path) -> list[str] | None:
    """Paths (relative to site-packages) the RECORD lists, or None if any lies outside."""
    try:
        lines = (dist_info / "RECORD").read_text().splitlines()
    except OSError:
        return None
    paths = [line.rsplit(",", 2)[0] for line in lines if line.strip()]
    if any(p.startswith(("../", "/")) for p in paths):
        return None
    return paths


def project_name(dist_info: Path) -> str:
    return dist_info.name.rsplit("-", 1)[0].lower().replace("-", "_")


def share(source: Path, target: Path) -> int:
    have = {project_name(d) for d in target.glob("*.dist-info")}
    shared = 0
    for dist_info in sorted(source.glob("*.dist-info")):
        if project_name(dist_info) in have or not is_pure(dist_info):
            continue
        paths = recorded_files(dist_info)
        if paths is None:
            continue
        files = [p for p in paths if not p.startswith(dist_info.name + "/") and (source / p).is_file()]
        size = sum((source / p).stat().st_size for p in files)
        if size < MIN_BYTES:
            continue
        try:
            for p in files:
                dest = target / p
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not dest.exists():
                    os.link(source / p, dest)
        except OSError as e:
            print(f"share_pure_dists: cannot hard-link {dist_info.name} ({e}); pip installs it", file=sys.stderr)
            shutil.rmtree(target / dist_info.name, ignore_errors=True)
            return shared
        shutil.copytree(dist_info, target / dist_info.name)
        shared += size
        print(f"    linked {dist_info.name} ({size / 2**20:.0f} MiB)")
    return shared


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python ci/share_pure_dists.py FROM_SITE_PACKAGES TO_SITE_PACKAGES")
    source, target = (Path(a) for a in sys.argv[1:])
    for p in (source, target):
        if not p.is_dir():
            sys.exit(f"share_pure_dists: {p} is not a site-packages directory")
    total = share(source, target)
    print(f"    {total / 2**30:.1f} GiB of pure distributions shared from {source}")


if __name__ == "__main__":
    main()
