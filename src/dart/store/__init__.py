"""Where commits live: content-addressed objects, commit records, refs and runs."""

from dart.store.local import CRASH_EXIT_CODE, RunLock, Store, commit_id, crash_point, object_id

__all__ = ["CRASH_EXIT_CODE", "RunLock", "Store", "commit_id", "crash_point", "object_id"]
