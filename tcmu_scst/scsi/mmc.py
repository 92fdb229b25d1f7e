"""MMC-6 emulation of a read-only CD/DVD drive with a virtual tray (SCST's vcdrom).

:class:`MmcDevice` answers, on top of :class:`~tcmu_scst.scsi.spc.SpcDevice`:
READ CAPACITY, READ(10/12), READ TOC/PMA/ATIP (formats 0, 1, 2), GET
CONFIGURATION, GET EVENT STATUS NOTIFICATION (polled), READ DISC INFORMATION,
READ TRACK INFORMATION, READ DISC STRUCTURE (DVD physical format, copyright, list),
GET PERFORMANCE, MECHANISM STATUS, PREVENT ALLOW MEDIUM REMOVAL, START STOP UNIT
(eject/load), SET CD SPEED and the mode pages 01h, 1Ch and 2Ah.

The drive has a tray (open or closed) and may hold an image (a :class:`Medium`):
the medium is present when both hold. An image of up to :data:`CD_MAX_BLOCKS`
blocks is a CD-ROM (profile 0008h), a larger one a DVD-ROM (0010h).

Writes are not refused with DATA PROTECT but with INVALID COMMAND OPERATION
CODE: MMC-6 defines commands per Feature, and this drive reports no writing
Feature (no Random Writable, no Incremental Streaming Writable...), so WRITE(10)
and friends are simply not commands it implements (SPC-4 answer 20/00). DATA
PROTECT / WRITE PROTECTED is for a writer holding a protected medium.

MMC opcodes are not in the shared ``scsi.opcodes`` table: the drive registers them
with :meth:`SpcDevice.register_local`, and SPC's one dispatcher runs them with the
same checks as every other command.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from tcmu_scst.command import Command, DataBuffer, Direction, Result, data_in_result
from tcmu_scst.errors import HandlerError
from tcmu_scst.scsi import opcodes as op
from tcmu_scst.scsi import sbc_pages
from tcmu_scst.scsi.block import BackendError
from tcmu_scst.scsi.cdb import be, rw_lba_and_length
from tcmu_scst.scsi.modes import ModePage
from tcmu_scst.scsi.opcodes import local_spec
from tcmu_scst.scsi.sense import (
    NOT_READY,
    UA_MEDIUM_MAY_HAVE_CHANGED,
    SenseError,
)
from tcmu_scst.scsi.spc import CommandHandler, SpcDevice, data_in

log = logging.getLogger(__name__)

TYPE_CDROM = 0x05
BLOCK_SIZE = 2048
#: An 80-minute CD: 360,000 sectors. A larger image is reported as a DVD-ROM.
CD_MAX_BLOCKS = 360_000
#: Largest transfer one READ accepts (blocks): 32 MiB, far above what sr sends.
MAX_TRANSFER_BLOCKS = 16384

PROFILE_NONE = 0x0000
PROFILE_CD_ROM = 0x0008
PROFILE_DVD_ROM = 0x0010

# MMC opcodes (MMC-6 table 14).
READ_TOC_PMA_ATIP = 0x43
GET_CONFIGURATION = 0x46
GET_EVENT_STATUS_NOTIFICATION = 0x4A
READ_DISC_INFORMATION = 0x51
READ_TRACK_INFORMATION = 0x52
GET_PERFORMANCE = 0xAC
READ_DISC_STRUCTURE = 0xAD
SET_CD_SPEED = 0xBB
MECHANISM_STATUS = 0xBD

# READ DISC STRUCTURE (media type 0: DVD) formats, and where a DVD's data area starts.
DVD_PHYSICAL_FORMAT = 0x00
DVD_COPYRIGHT = 0x01
DISC_STRUCTURE_LIST = 0xFF
DVD_DATA_START_PSN = 0x030000
# GET PERFORMANCE types.
PERFORMANCE = 0x00
WRITE_SPEED = 0x03

# GET EVENT STATUS NOTIFICATION classes (bit numbers) and media event codes.
CLASS_OPERATIONAL_CHANGE = 1
CLASS_POWER_MANAGEMENT = 2
CLASS_MEDIA = 4
CLASS_DEVICE_BUSY = 6
SUPPORTED_CLASSES = (
    CLASS_OPERATIONAL_CHANGE, CLASS_POWER_MANAGEMENT, CLASS_MEDIA, CLASS_DEVICE_BUSY
)
MEDIA_NO_CHANGE = 0
MEDIA_EJECT_REQUEST = 1
MEDIA_NEW_MEDIA = 2
MEDIA_REMOVAL = 3

MODE_CD_CAPABILITIES = 0x2A
MODE_RW_ERROR_RECOVERY = 0x01

#: ASCQ of MEDIUM NOT PRESENT (3Ah) by tray state.
ASCQ_TRAY_CLOSED = 0x01
ASCQ_TRAY_OPEN = 0x02
#: ADR 1 (Q sub-channel: current position), CONTROL 4 (data track, no copy).
ADR_CONTROL_DATA = 0x14
LEAD_OUT_TRACK = 0xAA
#: Nominal read speed reported in page 2Ah (kB/s; 176.4 kB/s = 1x CD).
READ_SPEED_KBS = 7056


class Medium(Protocol):
    """An image in the tray: read-only 2048-byte blocks."""

    @property
    def size(self) -> int:
        """Size in bytes (a multiple of 2048)."""
        ...

    def read(self, offset: int, length: int, buf: DataBuffer, buf_offset: int = 0) -> None:
        """Fill ``buf[buf_offset:buf_offset+length]`` from ``offset`` (in range)."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class CdromConfig:
    """What the drive reports about itself (satisfies ``scsi.identity.Identity``)."""

    name: str
    vendor: str = "SCST_FIO"
    product: str = ""
    revision: str = " 010"
    serial: str = ""
    t10_dev_id: str = ""
    naa_id: bytes = b""
    device_type: int = TYPE_CDROM
    removable: bool = True


def lba_to_msf(lba: int) -> bytes:
    """The 4-byte MSF address field (0, M, S, F) of an LBA: LBA 0 is 00:02:00."""
    frames = lba + 150
    minutes = min(frames // (60 * 75), 0xFF)
    return bytes((0, minutes, (frames // 75) % 60, frames % 75))


def _usage(*octets: int) -> bytes:
    return bytes(octets)


MMC_COMMANDS = (
    # MSF 02h; FORMAT 0Fh; TRACK/SESSION NUMBER; ALLOCATION LENGTH; control bits
    # 7-6 carry the old (SFF-8020) format field, which check_cdb ignores.
    local_spec(READ_TOC_PMA_ATIP, "READ TOC/PMA/ATIP",
               _usage(0x43, 0x02, 0x0F, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0), Direction.IN,
               media=True),
    # RT 03h; STARTING FEATURE NUMBER; ALLOCATION LENGTH.
    local_spec(GET_CONFIGURATION, "GET CONFIGURATION",
               _usage(0x46, 0x03, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0), Direction.IN),
    # POLLED 01h; NOTIFICATION CLASS REQUEST; ALLOCATION LENGTH.
    local_spec(GET_EVENT_STATUS_NOTIFICATION, "GET EVENT STATUS NOTIFICATION",
               _usage(0x4A, 0x01, 0, 0, 0xFF, 0, 0, 0xFF, 0xFF, 0), Direction.IN),
    # DATA TYPE 07h; ALLOCATION LENGTH.
    local_spec(READ_DISC_INFORMATION, "READ DISC INFORMATION",
               _usage(0x51, 0x07, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), Direction.IN, media=True),
    # OPEN 04h, ADDRESS/NUMBER TYPE 03h; LBA/TRACK/SESSION NUMBER; ALLOCATION LENGTH.
    local_spec(READ_TRACK_INFORMATION, "READ TRACK INFORMATION",
               _usage(0x52, 0x07, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0), Direction.IN,
               media=True),
    # DATA TYPE 1Fh; STARTING LBA; MAXIMUM NUMBER OF DESCRIPTORS; TYPE.
    local_spec(GET_PERFORMANCE, "GET PERFORMANCE",
               _usage(0xAC, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0),
               Direction.IN, media=True),
    # MEDIA TYPE 0Fh; ADDRESS; LAYER NUMBER; FORMAT CODE; ALLOCATION LENGTH; AGID C0h.
    local_spec(READ_DISC_STRUCTURE, "READ DISC STRUCTURE",
               _usage(0xAD, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC0, 0),
               Direction.IN),
    # ROTATIONAL CONTROL 03h; READ SPEED; WRITE SPEED.
    local_spec(SET_CD_SPEED, "SET CD SPEED",
               _usage(0xBB, 0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0), Direction.NONE),
    local_spec(MECHANISM_STATUS, "MECHANISM STATUS",
               _usage(0xBD, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0), Direction.IN),
)


class MmcDevice(SpcDevice):
    """A read-only CD/DVD drive with a tray; the image can change at run time."""

    ua_exempt = frozenset({GET_CONFIGURATION, GET_EVENT_STATUS_NOTIFICATION})

    def __init__(self, config: CdromConfig, medium: Medium | None = None) -> None:
        super().__init__(config)
        self.config = config
        self._medium = medium
        self.tray_open = False
        self.prevent = False  # PREVENT ALLOW MEDIUM REMOVAL, Prevent bit
        self.persistent_prevent = False
        self._media_event = MEDIA_NO_CHANGE
        #: Readers of the medium in flight; a swap waits for them (no read may
        #: ever see a closed, or worse a reused, file descriptor).
        self._readers = 0
        self._swap = threading.Condition()
        self._mode_pages = self._build_mode_pages()
        for opcode in (op.READ_10, op.READ_12):
            self.register(opcode, None, self._read)
        self.register(op.READ_CAPACITY, None, self._read_capacity)
        self.register(op.START_STOP, None, self._start_stop_unit)
        self.register(op.ALLOW_MEDIUM_REMOVAL, None, self._prevent_allow)
        handlers: dict[int, CommandHandler] = {
            READ_TOC_PMA_ATIP: self._read_toc,
            GET_CONFIGURATION: self._get_configuration,
            GET_EVENT_STATUS_NOTIFICATION: self._get_event_status,
            READ_DISC_INFORMATION: self._read_disc_information,
            READ_TRACK_INFORMATION: self._read_track_information,
            GET_PERFORMANCE: self._get_performance,
            READ_DISC_STRUCTURE: self._read_disc_structure,
            SET_CD_SPEED: lambda cmd, cdb: Result(),  # one speed: any request is met
            MECHANISM_STATUS: self._mechanism_status,
        }
        for spec in MMC_COMMANDS:
            self.register_local(spec, handlers[spec.opcode])

    # -- medium and tray ------------------------------------------------------------

    @property
    def medium(self) -> Medium | None:
        return self._medium

    @property
    def has_medium(self) -> bool:
        """A medium is present: an image is loaded and the tray is closed."""
        return self._medium is not None and not self.tray_open

    def reset(self) -> None:
        """A logical unit reset clears the Prevent bit; a persistent prevent stays
        until a power on or hard reset (MMC-6 6.14)."""
        self.prevent = False

    @property
    def removal_prevented(self) -> bool:
        return self.prevent or self.persistent_prevent

    @property
    def capacity(self) -> int:
        medium = self._medium
        return medium.size // BLOCK_SIZE if medium is not None else 0

    @property
    def current_profile(self) -> int:
        if not self.has_medium:
            return PROFILE_NONE
        return PROFILE_CD_ROM if self.capacity <= CD_MAX_BLOCKS else PROFILE_DVD_ROM

    def change_medium(self, medium: Medium | None) -> Medium | None:
        """Put ``medium`` in the drive (None empties it); returns the old one, unclosed.

        Refused (HandlerError) while an initiator prevents removal of a loaded
        medium: like a user pressing eject on a locked drive, that only reports an
        eject request to the initiator (GESN), as SCST refuses ``change`` then. The
        tray ends up closed; the initiators get NOT READY TO READY CHANGE, MEDIUM
        MAY HAVE CHANGED (28/00) and a media event.
        """
        if self.removal_prevented and self._medium is not None and not self.tray_open:
            self._media_event = MEDIA_EJECT_REQUEST
            raise HandlerError(
                f"vcdrom {self.config.name}: an initiator prevents medium removal "
                "(PREVENT ALLOW MEDIUM REMOVAL); unmount or eject it there first"
            )
        with self._swap:
            while self._readers:
                self._swap.wait()
            old, self._medium = self._medium, medium
        self.tray_open = False
        self._media_event = MEDIA_NEW_MEDIA if medium is not None else MEDIA_REMOVAL
        self.unit_attentions.post(*UA_MEDIUM_MAY_HAVE_CHANGED)
        log.info("%s: medium %s", self.config.name, "changed" if medium else "removed")
        return old

    @contextmanager
    def _reading(self) -> Iterator[Medium]:
        with self._swap:
            medium = self._medium
            if medium is None or self.tray_open:
                raise self._medium_not_present()
            self._readers += 1
        try:
            yield medium
        finally:
            with self._swap:
                self._readers -= 1
                if not self._readers:
                    self._swap.notify_all()

    def _medium_not_present(self) -> SenseError:
        ascq = ASCQ_TRAY_OPEN if self.tray_open else ASCQ_TRAY_CLOSED
        return SenseError(NOT_READY, 0x3A, ascq)

    def not_ready_error(self) -> SenseError | None:
        # A stopped disc spins up on the next access (MMC), so only the medium counts.
        return None if self.has_medium else self._medium_not_present()

    def _require_medium(self) -> None:
        if not self.has_medium:
            raise self._medium_not_present()

    # -- INQUIRY ------------------------------------------------------------------

    def standard_inquiry(self) -> bytes:
        data = bytearray(super().standard_inquiry())
        # Version descriptors: SAM-5, SPC-4, MMC-6 (instead of SBC-3).
        data[62:64] = (0x04E0).to_bytes(2, "big")
        return bytes(data)

    # -- READ CAPACITY / READ -------------------------------------------------------

    def _read_capacity(self, cmd: Command, cdb: bytes) -> Result:
        self._require_medium()
        if not cdb[8] & 0x01 and be(cdb, 2, 4):
            raise SenseError.invalid_field_in_cdb(2)
        data = (self.capacity - 1).to_bytes(4, "big") + BLOCK_SIZE.to_bytes(4, "big")
        return data_in(cmd, data, len(data))

    def _read(self, cmd: Command, cdb: bytes) -> Result:
        lba, blocks, length_field = rw_lba_and_length(cdb)
        if blocks > MAX_TRANSFER_BLOCKS:
            raise SenseError.invalid_field_in_cdb(length_field)
        with self._reading() as medium:
            if lba + blocks > medium.size // BLOCK_SIZE:
                raise SenseError.lba_out_of_range()
            length = min(blocks * BLOCK_SIZE, len(cmd.data))
            if length:
                try:
                    medium.read(lba * BLOCK_SIZE, length, cmd.data, 0)
                except (BackendError, OSError) as error:
                    log.warning("%s: reading the image failed: %s", self.config.name, error)
                    raise SenseError.read_error() from error
        return data_in_result(length)

    # -- READ TOC/PMA/ATIP ----------------------------------------------------------

    def _address(self, lba: int, msf: bool) -> bytes:
        return lba_to_msf(lba) if msf else lba.to_bytes(4, "big")

    def _read_toc(self, cmd: Command, cdb: bytes) -> Result:
        msf = bool(cdb[1] & 0x02)
        fmt = cdb[2] & 0x0F
        if fmt == 0:
            fmt = cdb[9] >> 6  # the old format field in the control byte
        number = cdb[6]
        alloc = be(cdb, 7, 2)
        leadout = self.capacity
        if fmt == 0:
            if number > 1 and number != LEAD_OUT_TRACK:
                raise SenseError.invalid_field_in_cdb(6)
            body = b""
            if number <= 1:
                body += bytes((0, ADR_CONTROL_DATA, 1, 0)) + self._address(0, msf)
            body += bytes((0, ADR_CONTROL_DATA, LEAD_OUT_TRACK, 0)) + self._address(leadout, msf)
            data = (len(body) + 2).to_bytes(2, "big") + bytes((1, 1)) + body
        elif fmt == 1:
            # Session information: one session, its first track starts at LBA 0.
            body = bytes((0, ADR_CONTROL_DATA, 1, 0)) + self._address(0, msf)
            data = (len(body) + 2).to_bytes(2, "big") + bytes((1, 1)) + body
        elif fmt == 2:
            data = self._full_toc()
        else:
            raise SenseError.invalid_field_in_cdb(2, 3)  # PMA, ATIP, CD-TEXT: no such data
        return data_in(cmd, data, alloc)

    def _full_toc(self) -> bytes:
        """Format 2 (always MSF): points A0h, A1h, A2h and track 1 of session 1."""

        def entry(point: int, pmsf: bytes) -> bytes:
            # SESSION, ADR/CONTROL, TNO 0, POINT, MIN SEC FRAME (0), ZERO, PMIN PSEC PFRAME
            return bytes((1, ADR_CONTROL_DATA, 0, point, 0, 0, 0, 0)) + pmsf

        leadout = lba_to_msf(self.capacity)[1:]
        body = (
            entry(0xA0, bytes((1, 0x00, 0)))  # first track 1, disc type CD-ROM
            + entry(0xA1, bytes((1, 0, 0)))  # last track 1
            + entry(0xA2, leadout)
            + entry(0x01, lba_to_msf(0)[1:])
        )
        return (len(body) + 2).to_bytes(2, "big") + bytes((1, 1)) + body

    # -- GET CONFIGURATION ----------------------------------------------------------

    def features(self) -> list[tuple[int, int, bool, bool, bytes]]:
        """(code, version, persistent, current, additional data), ascending code."""
        profile = self.current_profile
        present = profile != PROFILE_NONE
        profiles = b"".join(
            number.to_bytes(2, "big") + bytes((0x01 if number == profile else 0, 0))
            for number in (PROFILE_DVD_ROM, PROFILE_CD_ROM)
        )
        blocking = 16 if profile == PROFILE_DVD_ROM else 1
        # Removable Medium: loading mechanism 001b (tray), LOAD, EJECT, LOCK; the
        # current lock state is not reported here (PRVNT JMPR=0, DBML=0).
        removable = bytes((0x20 | 0x10 | 0x08 | 0x01, 0, 0, 0))
        return [
            (0x0000, 0, True, True, profiles),  # Profile List
            # Core: physical interface 1 (SCSI family); INQ2/DBE not claimed (v1).
            (0x0001, 1, True, True, (1).to_bytes(4, "big") + bytes(4)),
            (0x0002, 1, True, True, bytes((0x02, 0, 0, 0))),  # Morphing: OCEVENT, polled only
            (0x0003, 2, True, True, removable),
            # Random Readable: 2048-byte blocks, BLOCKING, PP=0.
            (0x0010, 0, False, present,
             BLOCK_SIZE.to_bytes(4, "big") + blocking.to_bytes(2, "big") + bytes(2)),
            (0x001D, 0, False, profile == PROFILE_CD_ROM, b""),  # Multi-Read
            (0x001E, 2, False, profile == PROFILE_CD_ROM, bytes(4)),  # CD Read: no C2/CD-Text
            (0x001F, 0, False, profile == PROFILE_DVD_ROM, b""),  # DVD Read
            (0x0100, 0, True, True, b""),  # Power Management
        ]

    def _get_configuration(self, cmd: Command, cdb: bytes) -> Result:
        rt = cdb[1] & 0x03
        start = be(cdb, 2, 2)
        alloc = be(cdb, 7, 2)
        if rt == 0b11:
            raise SenseError.invalid_field_in_cdb(1, 1)
        body = bytearray()
        for code, version, persistent, current, extra in self.features():
            # RT 10b: that one feature; 01b: current ones from START; 00b: all from START.
            wanted = code == start if rt == 0b10 else code >= start and (rt == 0b00 or current)
            if wanted:
                flags = (version << 2) | (0x02 if persistent else 0) | (0x01 if current else 0)
                body += code.to_bytes(2, "big") + bytes((flags, len(extra))) + extra
        header = (len(body) + 4).to_bytes(4, "big") + bytes(2)
        header += self.current_profile.to_bytes(2, "big")
        return data_in(cmd, header + bytes(body), alloc)

    # -- GET EVENT STATUS NOTIFICATION -------------------------------------------------

    def _get_event_status(self, cmd: Command, cdb: bytes) -> Result:
        if not cdb[1] & 0x01:
            raise SenseError.invalid_field_in_cdb(1, 0)  # asynchronous mode: not supported
        request = cdb[4]
        alloc = be(cdb, 7, 2)
        supported = sum(1 << cls for cls in SUPPORTED_CLASSES)
        wanted = [cls for cls in SUPPORTED_CLASSES if request & (1 << cls)]
        if not wanted:
            header = (2).to_bytes(2, "big") + bytes((0x80, supported))  # NEA
            return data_in(cmd, header, alloc)
        # The lowest class with an event pending wins; else the lowest requested.
        cls = CLASS_MEDIA if (
            CLASS_MEDIA in wanted and self._media_event != MEDIA_NO_CHANGE
        ) else wanted[0]
        if cls == CLASS_MEDIA:
            event = self._media_event
            if alloc >= 8:  # reported = consumed (polled mode)
                self._media_event = MEDIA_NO_CHANGE
            status = (0x02 if self.has_medium else 0) | (0x01 if self.tray_open else 0)
            descriptor = bytes((event, status, 0, 0))
        elif cls == CLASS_POWER_MANAGEMENT:
            descriptor = bytes((0, 0x01, 0, 0))  # no change, active
        else:  # operational change / device busy: no change, available / not busy
            descriptor = bytes(4)
        header = (len(descriptor) + 2).to_bytes(2, "big") + bytes((cls, supported))
        return data_in(cmd, header + descriptor, alloc)

    # -- READ DISC / TRACK INFORMATION ---------------------------------------------------

    def _read_disc_information(self, cmd: Command, cdb: bytes) -> Result:
        if cdb[1] & 0x07:
            raise SenseError.invalid_field_in_cdb(1, 2)  # only standard disc information
        alloc = be(cdb, 7, 2)
        data = bytearray(34)
        data[0:2] = (32).to_bytes(2, "big")
        data[2] = 0x0E  # not erasable, last session complete, disc finalized
        data[3] = 1  # first track on disc
        data[4] = 1  # number of sessions
        data[5] = 1  # first track in last session
        data[6] = 1  # last track in last session
        data[8] = 0x00  # disc type: CD-DA or CD-ROM (other media: 00h too)
        data[16:24] = b"\xff" * 8  # no next session: lead-in / lead-out not possible
        return data_in(cmd, bytes(data), alloc)

    def _read_disc_structure(self, cmd: Command, cdb: bytes) -> Result:
        """READ DISC STRUCTURE (MMC-6 6.22), DVD media type: the physical format and
        copyright structures of a pressed single-layer DVD-ROM, and their list.

        The list (FFh) needs no medium; the structures need a DVD in the tray (a CD
        gets CANNOT READ MEDIUM - INCOMPATIBLE FORMAT).
        """
        if cdb[1] & 0x0F:
            raise SenseError.invalid_field_in_cdb(1, 3)  # BD and other media types
        fmt, alloc = cdb[7], be(cdb, 8, 2)
        if fmt == DISC_STRUCTURE_LIST:
            entries = [(DVD_PHYSICAL_FORMAT, 2048 + 4), (DVD_COPYRIGHT, 4 + 4),
                       (DISC_STRUCTURE_LIST, 4 + 3 * 4)]  # fmt: skip
            body = b"".join(bytes((code, 0x40)) + n.to_bytes(2, "big") for code, n in entries)
        elif fmt in (DVD_PHYSICAL_FORMAT, DVD_COPYRIGHT):
            self._require_medium()
            if self.current_profile != PROFILE_DVD_ROM:
                raise SenseError.cannot_read_incompatible_format()
            if cdb[6]:
                raise SenseError.invalid_field_in_cdb(6)  # one layer
            if fmt == DVD_COPYRIGHT:
                body = bytes(4)  # no copy protection, no region restriction
            else:
                info = bytearray(2048)
                info[0] = 0x01  # book type DVD-ROM, part version 1
                info[1] = 0x02  # 120 mm, maximum rate 10.08 Mbit/s
                info[2] = 0x01  # one layer, parallel track path, embossed (read-only)
                last = DVD_DATA_START_PSN + self.capacity - 1
                info[4:8] = DVD_DATA_START_PSN.to_bytes(4, "big")
                info[8:12] = last.to_bytes(4, "big")
                body = bytes(info)
        else:
            raise SenseError.invalid_field_in_cdb(7)
        header = (len(body) + 2).to_bytes(2, "big") + bytes(2)
        return data_in(cmd, header + body, alloc)

    def _get_performance(self, cmd: Command, cdb: bytes) -> Result:
        """GET PERFORMANCE (MMC-6 6.8): one nominal read speed over the whole disc; a
        read-only drive has no write speeds and no exceptions to list."""
        kind, wanted = cdb[10], be(cdb, 8, 2)
        descriptors = b""
        if kind == PERFORMANCE:
            flags = cdb[1] & 0x07  # Write 04h, Except 03h
            if not flags and wanted:
                speed = READ_SPEED_KBS.to_bytes(4, "big")
                descriptors = bytes(4) + speed + (self.capacity - 1).to_bytes(4, "big") + speed
            # Header byte 4 echoes what the descriptors are: Write 02h, Except 01h.
            kind_bits = (0x02 if flags & 0x04 else 0) | (0x01 if flags & 0x03 else 0)
            header = (4 + len(descriptors)).to_bytes(4, "big") + bytes((kind_bits, 0, 0, 0))
        elif kind == WRITE_SPEED:
            header = (4).to_bytes(4, "big") + bytes(4)
        else:
            raise SenseError.invalid_field_in_cdb(10)
        return data_in(cmd, header + descriptors, 8 + 16 * wanted)

    def _read_track_information(self, cmd: Command, cdb: bytes) -> Result:
        kind = cdb[1] & 0x03
        if cdb[1] & 0x04:
            raise SenseError.invalid_field_in_cdb(1, 2)  # OPEN: no open tracks here
        value = be(cdb, 2, 4)
        alloc = be(cdb, 7, 2)
        if kind == 0b00:
            if value >= self.capacity:
                raise SenseError.lba_out_of_range()
        elif kind in (0b01, 0b10):
            if value != 1:  # one track in one session
                raise SenseError.invalid_field_in_cdb(2)
        else:
            raise SenseError.invalid_field_in_cdb(1, 1)
        data = bytearray(36)
        data[0:2] = (34).to_bytes(2, "big")
        data[2] = 1  # track number
        data[3] = 1  # session number
        data[5] = 0x04  # track mode: data, recorded uninterrupted
        data[6] = 0x01  # data mode 1
        data[24:28] = self.capacity.to_bytes(4, "big")  # track size
        data[28:32] = (self.capacity - 1).to_bytes(4, "big")  # last recorded address
        return data_in(cmd, bytes(data), alloc)

    # -- MECHANISM STATUS / PREVENT ALLOW / START STOP --------------------------------------

    def _mechanism_status(self, cmd: Command, cdb: bytes) -> Result:
        alloc = be(cdb, 8, 2)
        data = bytearray(8)
        data[1] = 0x10 if self.tray_open else 0x00  # mechanism idle; DOOR OPEN
        return data_in(cmd, bytes(data), alloc)

    def _prevent_allow(self, cmd: Command, cdb: bytes) -> Result:
        """PREVENT bits (MMC-6 6.26): 1xb sets/clears Persistent Prevent, 0xb Prevent."""
        lock = bool(cdb[4] & 0x01)
        if cdb[4] & 0x02:
            self.persistent_prevent = lock
        else:
            self.prevent = lock
        return Result()

    def _start_stop_unit(self, cmd: Command, cdb: bytes) -> Result:
        """START STOP UNIT (MMC-6 6.39): LOEJ opens (START=0) or closes (START=1) the tray."""
        byte4 = cdb[4]
        if byte4 >> 4:
            return Result()  # a power condition: nothing to enter, START/LOEJ ignored
        start, loej = bool(byte4 & 0x01), bool(byte4 & 0x02)
        if not loej:
            return Result()  # spin up / down: a virtual disc is always spinning
        if start:
            if self.tray_open:
                self.tray_open = False
                if self._medium is not None:
                    self._media_event = MEDIA_NEW_MEDIA
                    self.unit_attentions.post(*UA_MEDIUM_MAY_HAVE_CHANGED)
            return Result()
        if self.removal_prevented:
            raise SenseError.medium_removal_prevented()
        if not self.tray_open:
            self.tray_open = True
            if self._medium is not None:
                self._media_event = MEDIA_REMOVAL
        return Result()

    # -- mode pages ----------------------------------------------------------------------

    def _build_mode_pages(self) -> dict[int, ModePage]:
        def fixed(build: Callable[[], bytes]) -> ModePage:
            page = build()
            return ModePage(page[0], build, build, lambda: sbc_pages.unchangeable(build()))

        return {
            MODE_RW_ERROR_RECOVERY: fixed(_rw_error_recovery_page),
            sbc_pages.MODE_INFORMATIONAL_EXCEPTIONS: fixed(
                sbc_pages.informational_exceptions_page
            ),
            MODE_CD_CAPABILITIES: fixed(self._capabilities_page),
        }

    def mode_pages(self) -> Mapping[int, ModePage]:
        return self._mode_pages

    def mode_write_protected(self) -> bool:
        return True

    def _capabilities_page(self) -> bytes:
        """CD/DVD Capabilities and Mechanical Status (MMC-3 5.5.10; Linux sr reads it)."""
        page = bytearray(22)
        page[0:2] = bytes((MODE_CD_CAPABILITIES, 20))
        page[2] = 0x08  # reads DVD-ROM (and CD-ROM, always); writes nothing (byte 3 = 0)
        page[4] = 0x40  # multi-session
        # LOCK, LOCK STATE, EJECT; loading mechanism 001b (tray).
        page[6] = 0x01 | (0x02 if self.removal_prevented else 0) | 0x08 | 0x20
        page[8:10] = READ_SPEED_KBS.to_bytes(2, "big")  # maximum read speed (obsolete)
        page[14:16] = READ_SPEED_KBS.to_bytes(2, "big")  # current read speed (obsolete)
        return bytes(page)


def _rw_error_recovery_page() -> bytes:
    """Read/Write Error Recovery (MMC-6 7.3): no retries configurable, nothing reported."""
    page = bytearray(12)
    page[0:2] = bytes((MODE_RW_ERROR_RECOVERY, 0x0A))
    return bytes(page)
