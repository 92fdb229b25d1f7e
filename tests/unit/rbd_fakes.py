"""A stand-in for Ceph's ``rados``/``rbd`` modules: the cluster, pool and image objects
the vdisk_rbd backend calls, over memory. Only the I/O primitives are replaced: the
handler, the SBC emulation and the aio completion path above them are the real ones.
aio callbacks run on another thread, as librbd's do.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

#: The fake image's object size (librbd's default is 4 MiB).
OBJECT = 64 << 10


class RadosError(Exception):
    def __init__(self, message: str, code: int = errno.EIO) -> None:
        super().__init__(message)
        self.errno = code


class ObjectNotFound(RadosError):
    pass


class ImageNotFound(RadosError):
    pass


class Completion:
    def __init__(self, ret: int) -> None:
        self.ret = ret

    def get_return_value(self) -> int:
        return self.ret


class FakeImage:
    """An RBD image in memory; ``fail`` set to an errno makes every I/O fail so."""

    def __init__(self, cluster: FakeCluster, name: str, size: int) -> None:
        self.cluster = cluster
        self.name = name
        self.data = bytearray(size)
        self.allocated: set[int] = set()  # 4 KiB chunks written
        self.fail = 0
        self.calls: list[str] = []
        self.diffs: list[tuple[int, int, bool]] = []  # diff_iterate (offset, length, whole)
        self.read_only = False
        self.closed = False
        # Set: aio operations are held, unanswered, until release() (librbd queueing
        # I/O for the exclusive lock while the image's watch is broken).
        self.hang = False
        self._held: list[threading.Thread] = []

    def _check(self, what: str) -> None:
        self.calls.append(what)
        if self.fail:
            raise RadosError(f"{what} failed", self.fail)

    def size(self) -> int:
        return len(self.data)

    def resize(self, size: int) -> None:
        self._check("resize")
        self.data.extend(bytes(size - len(self.data)))

    def read(self, offset: int, length: int) -> bytes:
        self._check("read")
        return bytes(self.data[offset : offset + length])

    def write(self, data: bytes, offset: int) -> int:
        self._check("write")
        if self.read_only:
            raise RadosError("read-only", errno.EROFS)
        self.data[offset : offset + len(data)] = data
        self.allocated.update(range(offset >> 12, (offset + len(data) + 4095) >> 12))
        return len(data)

    def flush(self) -> None:
        self._check("flush")

    def discard(self, offset: int, length: int) -> None:
        self._check("discard")
        self.data[offset : offset + length] = bytes(length)
        first, end = -(-offset >> 12), (offset + length) >> 12
        self.allocated.difference_update(range(first, end))

    def diff_iterate(self, offset: int, length: int, from_snapshot: str | None,
                     iterate_cb: Callable[[int, int, bool], int],
                     whole_object: bool = False) -> None:
        """Written 4 KiB chunks; with ``whole_object`` the OBJECT-sized objects that
        hold any (librbd's object map). Each call is recorded in ``diffs``."""
        self._check("diff_iterate")
        self.diffs.append((offset, length, whole_object))
        unit = OBJECT if whole_object else 4096
        for first in sorted({(chunk << 12) // unit * unit for chunk in self.allocated}):
            if first < offset + length and first + unit > offset:
                iterate_cb(first, unit, True)

    def _later(self, what: str, work: Callable[[], Any], done: Callable[..., None],
               with_data: bool, fenced: Callable[[], bool] = lambda: False) -> None:
        def run() -> None:
            if fenced():  # the client was blocklisted: the OSDs refuse what it sends
                result, ret = None, -errno.ESHUTDOWN
            else:
                try:
                    result = work()
                    ret = 0
                except RadosError as err:
                    result, ret = None, -err.errno
            if with_data:
                done(Completion(ret), result)
            else:
                done(Completion(ret))

        self.calls.append("aio_" + what)
        thread = threading.Thread(target=run, daemon=True)
        if self.hang:
            self._held.append(thread)
        else:
            thread.start()

    def release(self) -> None:
        """The cluster is back: the held operations run and complete."""
        self.hang = False
        held, self._held = self._held, []
        for thread in held:
            thread.start()
        for thread in held:
            thread.join(10)

    def aio_read(self, offset: int, length: int, oncomplete: Callable[..., None],
                 fenced: Callable[[], bool] = lambda: False) -> Completion:
        self._later("read", lambda: self.read(offset, length), oncomplete, True, fenced)
        return Completion(0)

    def aio_write(self, data: bytes, offset: int, oncomplete: Callable[..., None],
                  fenced: Callable[[], bool] = lambda: False) -> Completion:
        self._later("write", lambda: self.write(data, offset), oncomplete, False, fenced)
        return Completion(0)

    def aio_flush(self, oncomplete: Callable[..., None],
                  fenced: Callable[[], bool] = lambda: False) -> Completion:
        self._later("flush", self.flush, oncomplete, False, fenced)
        return Completion(0)

    def aio_discard(self, offset: int, length: int, oncomplete: Callable[..., None],
                    fenced: Callable[[], bool] = lambda: False) -> Completion:
        self._later("discard", lambda: self.discard(offset, length), oncomplete, False, fenced)
        return Completion(0)

    def close(self) -> None:
        self.closed = True


class ImageHandle:
    """One client's open image (``rbd.Image``): the shared :class:`FakeImage`'s data,
    seen through a client that the cluster may blocklist. Once it is, what the client
    sends fails with ESHUTDOWN (and is recorded in ``cluster.fenced_calls``), and
    what it held fails so when it runs."""

    def __init__(self, image: FakeImage, cluster: FakeCluster, client: str) -> None:
        self.image = image
        self.cluster = cluster
        self.client = client
        self.closed = False

    def fenced(self) -> bool:
        return any(address == self.client for address, _ in self.cluster.blocklisted)

    def _sent(self, what: str) -> None:
        if self.fenced():
            self.cluster.fenced_calls.append((self.client, what))

    def aio_read(self, offset: int, length: int, oncomplete: Callable[..., None]) -> Completion:
        self._sent("aio_read")
        return self.image.aio_read(offset, length, oncomplete, self.fenced)

    def aio_write(self, data: bytes, offset: int, oncomplete: Callable[..., None]) -> Completion:
        self._sent("aio_write")
        return self.image.aio_write(data, offset, oncomplete, self.fenced)

    def aio_flush(self, oncomplete: Callable[..., None]) -> Completion:
        self._sent("aio_flush")
        return self.image.aio_flush(oncomplete, self.fenced)

    def aio_discard(self, offset: int, length: int,
                    oncomplete: Callable[..., None]) -> Completion:
        self._sent("aio_discard")
        return self.image.aio_discard(offset, length, oncomplete, self.fenced)

    def close(self) -> None:
        self.closed = True
        self.image.closed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.image, name)


class FakeCluster:
    """Pools of images; ``conf`` records what the handle was configured with."""

    def __init__(self) -> None:
        self.pools: dict[str, dict[str, FakeImage]] = {}
        self.conf: dict[str, str] = {}
        self.connected = False
        self.down = False
        self.clients: list[str] = []  # the address of each client handle made
        self.blocklisted: list[tuple[str, int]] = []
        self.fenced_calls: list[tuple[str, str]] = []  # (client, call) sent once blocklisted
        self.shut_down: list[str] = []  # clients whose handle was shut down
        self.handles: list[ImageHandle] = []  # every image opened, in order
        #: Called by wait_for_latest_osdmap (between a blocklist and its use).
        self.on_osdmap: Callable[[], None] | None = None

    def add_image(self, pool: str, name: str, size: int) -> FakeImage:
        image = FakeImage(self, name, size)
        self.pools.setdefault(pool, {})[name] = image
        return image

    def binding(self) -> tuple[Any, Any]:
        """``(rados, rbd)`` module stand-ins bound to this cluster."""
        cluster = self

        class Rados:
            def __init__(self, conffile: str | None = None, rados_id: str | None = None,
                         conf: dict[str, str] | None = None) -> None:
                cluster.conf = dict(conf or {})
                cluster.conf["@conffile"] = conffile or ""
                cluster.conf["@id"] = rados_id or ""
                self.address = f"127.0.0.1:0/{len(cluster.clients) + 1}"
                cluster.clients.append(self.address)

            def connect(self) -> None:
                if cluster.down:
                    raise RadosError("[errno 110] RADOS timed out", errno.ETIMEDOUT)
                cluster.connected = True

            def open_ioctx(self, pool: str) -> Any:
                if pool not in cluster.pools:
                    raise ObjectNotFound(f"pool {pool}", errno.ENOENT)
                return SimpleNamespace(pool=pool, client=self.address, close=lambda: None)

            def shutdown(self) -> None:
                cluster.connected = False
                cluster.shut_down.append(self.address)

            def get_addrs(self) -> str:
                return self.address

            def blocklist_add(self, address: str, expire_seconds: int = 0) -> None:
                if cluster.down:
                    raise RadosError("[errno 110] RADOS timed out", errno.ETIMEDOUT)
                cluster.blocklisted.append((address, expire_seconds))

            def wait_for_latest_osdmap(self) -> None:
                if cluster.on_osdmap is not None:
                    cluster.on_osdmap()

        def image(ioctx: Any, name: str, read_only: bool = False) -> ImageHandle:
            try:
                img = cluster.pools[ioctx.pool][name]
            except KeyError:
                raise ImageNotFound(name, errno.ENOENT) from None
            img.read_only = read_only
            img.closed = False
            handle = ImageHandle(img, cluster, ioctx.client)
            cluster.handles.append(handle)
            return handle

        rados = SimpleNamespace(Rados=Rados, ObjectNotFound=ObjectNotFound)
        rbd = SimpleNamespace(Image=image, ImageNotFound=ImageNotFound)
        return rados, rbd
