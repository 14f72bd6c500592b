#!/usr/bin/env python3
"""A paced serial line for csipd's RTU measurement: two pseudo-terminals joined so that
bytes cross at the speed of a real UART (default 9600 baud, 10 bits per character for
8N1). A plain socat pty pair moves bytes instantly, which hides the wire time.

Prints "PTYS <a> <b>" when ready; runs until killed.
"""

import argparse
import os
import threading
import time
import tty


def relay(src, dst, char_s):
    line_free = time.monotonic()
    while True:
        data = os.read(src, 256)
        if not data:
            return
        now = time.monotonic()
        line_free = max(line_free, now)
        for b in data:
            line_free += char_s
            delay = line_free - time.monotonic()
            if delay > 0:
                # sleep-ok: the serial line's pace (one character per char_s) is what this peer plays.
                time.sleep(delay)
            os.write(dst, bytes([b]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--bits-per-char", type=int, default=10)
    args = ap.parse_args()
    char_s = args.bits_per_char / args.baud
    m1, s1 = os.openpty()
    m2, s2 = os.openpty()
    for fd in (s1, s2, m1, m2):
        tty.setraw(fd)
    print(f"PTYS {os.ttyname(s1)} {os.ttyname(s2)}", flush=True)
    t1 = threading.Thread(target=relay, args=(m1, m2, char_s), daemon=True)
    t2 = threading.Thread(target=relay, args=(m2, m1, char_s), daemon=True)
    t1.start()
    t2.start()
    t1.join()


if __name__ == "__main__":
    main()
