from __future__ import annotations

import os
import re
import threading
import time
import uuid
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.core.ids import IdGenerator, millis_of

HEX32 = re.compile(r"[0-9a-f]{32}")


def counter_of(task_id: str) -> int:
    """The 12-bit ``rand_a`` counter of an id."""
    return (int(task_id, 16) >> 64) & 0xFFF


def test_ids_are_32_lowercase_hex_characters() -> None:
    gen = IdGenerator()
    for _ in range(1000):
        task_id = gen.new_id()
        assert HEX32.fullmatch(task_id), task_id


def test_ids_carry_uuid_version_7_and_rfc_variant() -> None:
    gen = IdGenerator()
    for _ in range(1000):
        parsed = uuid.UUID(hex=gen.new_id())
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_ids_strictly_increase_across_100k_calls_in_one_thread() -> None:
    gen = IdGenerator()
    ids = [gen.new_id() for _ in range(100_000)]
    assert all(a < b for a, b in pairwise(ids))


def test_ids_from_many_threads_are_unique_and_ordered_per_thread() -> None:
    gen = IdGenerator()
    threads_count, per_thread = 8, 5_000
    results: list[list[str]] = [[] for _ in range(threads_count)]
    barrier = threading.Barrier(threads_count)

    def work(out: list[str]) -> None:
        barrier.wait()
        for _ in range(per_thread):
            out.append(gen.new_id())

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for out in results:
        assert len(out) == per_thread
        assert sorted(out) == out
    everything = [task_id for out in results for task_id in out]
    assert len(set(everything)) == threads_count * per_thread
    # The (millisecond, counter) prefix alone is unique: it is taken under the lock.
    assert len({task_id[:16] for task_id in everything}) == threads_count * per_thread


def test_same_millisecond_ids_step_the_counter() -> None:
    gen = IdGenerator()
    first = gen.new_id(now_ms=1_700_000_000_000)
    second = gen.new_id(now_ms=1_700_000_000_000)
    third = gen.new_id(now_ms=1_700_000_000_000)
    assert millis_of(first) == millis_of(second) == millis_of(third) == 1_700_000_000_000
    # A new millisecond starts the counter in the lower half, leaving room for 2048+ ids.
    assert counter_of(first) <= 0x7FF
    assert counter_of(second) == counter_of(first) + 1
    assert counter_of(third) == counter_of(first) + 2
    assert first < second < third


def test_new_millisecond_restarts_counter_in_lower_half() -> None:
    gen = IdGenerator()
    for ms in range(1_000, 1_200):
        task_id = gen.new_id(now_ms=ms)
        assert millis_of(task_id) == ms
        assert counter_of(task_id) <= 0x7FF


def test_counter_overflow_borrows_the_next_millisecond() -> None:
    gen = IdGenerator()
    start = 1_700_000_000_000
    ids = [gen.new_id(now_ms=start) for _ in range(4_200)]
    assert all(a < b for a, b in pairwise(ids))
    millis = [millis_of(task_id) for task_id in ids]
    assert millis[0] == start
    assert set(millis) == {start, start + 1}
    borrowed = millis.index(start + 1)
    assert counter_of(ids[borrowed - 1]) == 0xFFF
    assert counter_of(ids[borrowed]) == 0
    # The wall clock now reaching the borrowed millisecond keeps counting, never repeats.
    after = gen.new_id(now_ms=start + 1)
    assert after > ids[-1]
    assert millis_of(after) == start + 1


def test_clock_going_backwards_keeps_ids_increasing() -> None:
    gen = IdGenerator()
    first = gen.new_id(now_ms=5_000)
    second = gen.new_id(now_ms=4_000)
    assert second > first
    assert millis_of(second) == 5_000


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**48 - 10_000), min_size=1, max_size=50))
def test_ids_increase_for_any_sequence_of_clock_readings(readings: list[int]) -> None:
    gen = IdGenerator()
    ids = [gen.new_id(now_ms=ms) for ms in readings]
    assert all(a < b for a, b in pairwise(ids))
    assert all(HEX32.fullmatch(task_id) for task_id in ids)
    for task_id, ms in zip(ids, readings, strict=True):
        assert millis_of(task_id) >= ms


def test_millis_of_returns_the_embedded_timestamp() -> None:
    assert millis_of(IdGenerator().new_id(now_ms=1_715_949_045_123)) == 1_715_949_045_123
    assert millis_of(IdGenerator().new_id(now_ms=0)) == 0
    assert millis_of(IdGenerator().new_id(now_ms=2**48 - 1)) == 2**48 - 1


def test_default_timestamp_is_the_wall_clock() -> None:
    before = time.time_ns() // 1_000_000
    task_id = IdGenerator().new_id()
    after = time.time_ns() // 1_000_000
    assert before <= millis_of(task_id) <= after


def test_a_forked_child_does_not_reuse_the_parents_random_bits() -> None:
    gen = IdGenerator()
    gen.new_id()  # fills the buffer of OS randomness in the parent
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id's random part, then leave at once
        os.write(writer, gen.new_id(10**12).encode())
        os._exit(0)
    os.close(writer)
    child_id = os.read(reader, 64).decode()
    os.close(reader)
    os.waitpid(pid, 0)
    parent_id = gen.new_id(10**12)
    # Same millisecond and counter start would be drawn from the same bytes without the refill.
    assert child_id[16:] != parent_id[16:]
