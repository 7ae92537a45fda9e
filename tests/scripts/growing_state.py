"""A state that grows by 128 KiB of new (incompressible) data per step: on a
small filesystem the store fills up while the program runs. DELETE_STORE=path
removes the store at step 10, as a user cleaning up the wrong folder would;
SHUT_DOWN_FS=path shuts the ext4 filesystem at path down at step 10 (every
later write fails with EIO, as on a failing disk)."""

import fcntl
import os
import shutil
import struct
import time

EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2

import numpy as np

rng = np.random.default_rng(0)
chunks = []
total = 0.0
for step in range(30):
    chunks.append(rng.random(16_384))
    total += float(chunks[-1].sum())
    print(f"step {step} total {total:.6f}", flush=True)
    if step == 10 and os.environ.get("DELETE_STORE"):
        while os.path.exists(os.environ["DELETE_STORE"]):  # dart may be writing into it meanwhile
            shutil.rmtree(os.environ["DELETE_STORE"], ignore_errors=True)
    if step == 10 and os.environ.get("SHUT_DOWN_FS"):
        fd = os.open(os.environ["SHUT_DOWN_FS"], os.O_RDONLY)
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        os.close(fd)
    time.sleep(0.01)
print("done", len(chunks), f"{total:.6f}")
