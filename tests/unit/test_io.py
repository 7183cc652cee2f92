"""Reading the result store while the driver rewrites it (docs/design.md §6)."""

from __future__ import annotations

import threading

import pyarrow as pa

from astray.sweep.store import ResultStore, read_epochs


def _row(epoch: int, note: str) -> dict:
    return {"epoch": epoch, "val_acc": 0.5, "train_loss": 1.0, "strategy": note}


def test_a_reader_polling_a_live_store_never_sees_a_torn_file(tmp_path):
    # The driver replaces epochs/<trial>.parquet after every epoch while a user (or a test)
    # polls it. Tables of different sizes make a footer/page mix-up visible as an error.
    store = ResultStore(tmp_path, {}).open()
    store.write_epochs("t1", [_row(0, "x")])
    stop = threading.Event()

    def driver():
        i = 0
        while not stop.is_set():
            i += 1
            store.write_epochs("t1", [_row(e, "y" * (i % 13)) for e in range(1 + i % 40)])

    writer = threading.Thread(target=driver)
    writer.start()
    try:
        sizes = {read_epochs(tmp_path).num_rows for _ in range(1500)}
    finally:
        stop.set()
        writer.join()
    assert len(sizes) > 1  # the reads really overlapped the rewrites
    assert isinstance(read_epochs(tmp_path), pa.Table)
