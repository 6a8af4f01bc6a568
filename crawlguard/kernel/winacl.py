"""Windows security descriptors: private files and folders from their creation, and who
else may write (or read) one that exists.

Why: ``os.mkdir(mode=0o700)`` and ``os.open(..., 0o600)`` do nothing on Windows
(Python's docs); a new file or folder takes the inheritable entries of its
parent, which under ``%ProgramData%`` let ``BUILTIN\\Users`` create files and
folders. Whoever can write the state dir decides which process a rung signals,
and a token restricted *after* it was written could be opened in between (the
handle stays valid). So crawlguard creates them with their security descriptor
in the creating call (``CreateDirectoryW`` / ``CreateFileW`` with
``SECURITY_ATTRIBUTES``): a *protected* DACL (``D:P``: nothing inherited)
granting full control to the current user, SYSTEM and Administrators only.

An existing folder is judged by its owner and DACL, read as SDDL
(``GetNamedSecurityInfoW`` + ``ConvertSecurityDescriptorToStringSecurityDescriptorW``):
``untrusted`` lists every allow entry (explicit or inherited, effective or
inherit-only) that grants a right in the given mask to anyone but the current
user, SYSTEM, Administrators or CREATOR OWNER, and an owner outside them (an
owner can rewrite the DACL). A folder under the user's profile, whose
inherited entries name only those, passes; one under ``%ProgramData%`` or
``C:\\`` with its inherited Users / Authenticated Users entries does not.

Every OS call goes through ``AclApi``; ``Advapi32Acl`` is the real one (ctypes,
like ``winjob``), tests substitute a fake at exactly this boundary. The SDDL
logic is pure and runs everywhere.
"""

from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass
from typing import Protocol

from .seam import Seam

SYSTEM = "S-1-5-18"
ADMINISTRATORS = "S-1-5-32-544"
CREATOR_OWNER = "S-1-3-0"
OWNER_RIGHTS = "S-1-3-4"
ALIASES = {
    "SY": SYSTEM, "BA": ADMINISTRATORS, "CO": CREATOR_OWNER, "OW": OWNER_RIGHTS,
    "WD": "S-1-1-0", "BU": "S-1-5-32-545", "AU": "S-1-5-11", "IU": "S-1-5-4",
    "BG": "S-1-5-32-546", "AN": "S-1-5-7", "NU": "S-1-5-2", "SU": "S-1-5-6",
    "LS": "S-1-5-19", "NS": "S-1-5-20", "PS": "S-1-5-10", "AC": "S-1-15-2-1",
    "CG": "S-1-3-1", "PU": "S-1-5-32-547", "RD": "S-1-5-32-555",
}
NAMES = {SYSTEM: "NT AUTHORITY\\SYSTEM", ADMINISTRATORS: "BUILTIN\\Administrators",
         "S-1-1-0": "Everyone", "S-1-5-32-545": "BUILTIN\\Users",
         "S-1-5-11": "NT AUTHORITY\\Authenticated Users", "S-1-5-4": "NT AUTHORITY\\INTERACTIVE",
         "S-1-5-32-546": "BUILTIN\\Guests", "S-1-5-7": "NT AUTHORITY\\ANONYMOUS LOGON",
         CREATOR_OWNER: "CREATOR OWNER", OWNER_RIGHTS: "OWNER RIGHTS"}
RIGHTS = {
    "GA": 0x10000000, "GR": 0x80000000, "GW": 0x40000000, "GX": 0x20000000,
    "RC": 0x00020000, "SD": 0x00010000, "WD": 0x00040000, "WO": 0x00080000,
    "RP": 0x10, "WP": 0x20, "CC": 0x1, "DC": 0x2, "LC": 0x4, "SW": 0x8, "LO": 0x80,
    "DT": 0x40, "CR": 0x100,
    "FA": 0x001F01FF, "FR": 0x00120089, "FW": 0x00120116, "FX": 0x001200A0,
    "KA": 0x000F003F, "KR": 0x00020019, "KW": 0x00020006, "KX": 0x00020019,
}
"""SDDL's access-right strings (ADS and file names share bits)."""
_ALL = 0xFFFFFFFF
WRITE_RIGHTS = (0x2 | 0x4 | 0x10 | 0x40 | 0x100       # add file/subdir, EAs, delete child, attrs
                | 0x00010000 | 0x00040000 | 0x00080000  # DELETE, WRITE_DAC, WRITE_OWNER
                | 0x02000000 | 0x10000000 | 0x40000000)  # MAXIMUM_ALLOWED, GENERIC_ALL/_WRITE
"""What lets someone create, change or delete something in a folder, or its ACL."""
READ_RIGHTS = 0x1 | 0x02000000 | 0x10000000 | 0x80000000
"""What lets someone read a file's data (FILE_READ_DATA, MAXIMUM_ALLOWED, GENERIC_*)."""
ALLOW_TYPES = frozenset({"A", "OA", "XA", "ZA"})


def private_sddl(user_sid: str, directory: bool) -> str:
    """A protected DACL: full control for ``user_sid``, SYSTEM and Administrators only;
    inherited by what a folder holds (OI: files, CI: folders)."""
    inherit = "OICI" if directory else ""
    return "D:P" + "".join(f"(A;{inherit};FA;;;{sid})" for sid in (user_sid, "SY", "BA"))


@dataclass(frozen=True)
class Ace:
    kind: str
    flags: frozenset[str]
    mask: int
    sid: str

    @property
    def inherited(self) -> bool:
        return "ID" in self.flags


@dataclass(frozen=True)
class Descriptor:
    owner: str | None
    protected: bool
    aces: tuple[Ace, ...]


def _sid(text: str) -> str:
    text = text.strip()
    return ALIASES.get(text, text)


def _mask(text: str) -> int:
    text = text.strip()
    if text.lower().startswith("0x"):
        return int(text, 16) & _ALL
    if text.isdigit():
        return int(text) & _ALL
    mask = 0
    for i in range(0, len(text), 2):
        mask |= RIGHTS.get(text[i:i + 2], _ALL)  # an unknown right counts as every right
    return mask


def _aces(text: str) -> tuple[list[str], str]:
    """The ACE strings at the start of ``text`` (balanced parentheses: conditional
    ACEs nest them), and what follows them."""
    out, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            if depth == 0:
                start = i + 1
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                out.append(text[start:i])
        elif depth == 0:
            break
        i += 1
    return out, text[i:]


def parse_sddl(sddl: str) -> Descriptor:
    """The owner and DACL of an SDDL string (``ValueError`` when it has no DACL)."""
    owner_m = re.search(r"O:(.+?)(?=[GDS]:|$)", sddl)
    dacl_at = sddl.find("D:")
    if dacl_at < 0:
        raise ValueError(f"no DACL in {sddl!r}")
    flags_m = re.match(r"[A-Z]*", sddl[dacl_at + 2:])
    flags = flags_m.group(0) if flags_m else ""
    strings, _ = _aces(sddl[dacl_at + 2 + len(flags):])
    aces = []
    for ace in strings:
        parts = ace.split(";")
        if len(parts) < 6:
            raise ValueError(f"malformed ACE ({ace}) in {sddl!r}")
        ace_flags = frozenset(parts[1][i:i + 2] for i in range(0, len(parts[1]), 2))
        aces.append(Ace(parts[0], ace_flags, _mask(parts[2]), _sid(parts[5])))
    return Descriptor(_sid(owner_m.group(1)) if owner_m else None, "P" in flags.replace(
        "AI", "").replace("AR", ""), tuple(aces))


def name_of(sid: str) -> str:
    known = NAMES.get(sid)
    return f"{known} ({sid})" if known else sid


def untrusted(sddl: str, user_sid: str, rights: int) -> list[str]:
    """Who besides the user, SYSTEM and Administrators holds one of ``rights`` (or owns
    the object), one line each; [] when nobody does."""
    try:
        desc = parse_sddl(sddl)
    except ValueError as exc:
        return [f"nobody can tell: {exc}"]  # judged like the worst case: refused
    trusted = {user_sid, SYSTEM, ADMINISTRATORS, CREATOR_OWNER}
    out: list[str] = []
    if "D:NO_ACCESS_CONTROL" in sddl:
        out.append("Everyone may do anything (no DACL: a file system without ACLs, such as "
                   "FAT32 or a network share, or a NULL DACL)")
    if desc.owner is not None and desc.owner not in trusted:
        out.append(f"{name_of(desc.owner)} owns it (an owner can change its ACL)")
    owner_trusted = desc.owner is None or desc.owner in trusted
    verb = "write" if rights == WRITE_RIGHTS else "read" if rights == READ_RIGHTS else "access"
    for ace in desc.aces:
        if ace.kind not in ALLOW_TYPES:
            continue  # a deny entry grants nothing
        if ace.sid in trusted or (ace.sid == OWNER_RIGHTS and owner_trusted):
            continue
        if ace.mask & rights:
            scope = " what it holds" if "IO" in ace.flags else ""
            out.append(f"{name_of(ace.sid)} may {verb}{scope} "
                       f"({'inherited' if ace.inherited else 'explicit'} entry, access mask "
                       f"0x{ace.mask:08X})")
    return out


# -- the OS boundary --------------------------------------------------------------------------

class AclApi(Protocol):
    def user_sid(self) -> str:
        """The SID of the user this process runs as (its token's user)."""

    def create_directory(self, path: str, sddl: str) -> None:
        """CreateDirectoryW with this descriptor; FileExistsError when ``path`` exists."""

    def create_file(self, path: str, sddl: str) -> int:
        """CreateFileW(CREATE_NEW, GENERIC_WRITE) with this descriptor; a C runtime file
        descriptor open for writing. FileExistsError when ``path`` exists."""

    def read_sddl(self, path: str) -> str:
        """The owner and DACL of ``path`` as SDDL."""


SDDL_REVISION_1 = 1
SE_FILE_OBJECT = 1
OWNER_SECURITY_INFORMATION = 0x1
DACL_SECURITY_INFORMATION = 0x4
TOKEN_QUERY = 0x0008
TOKEN_USER_CLASS = 1
GENERIC_WRITE = 0x40000000
CREATE_NEW = 1
FILE_ATTRIBUTE_NORMAL = 0x80


class _SecurityAttributes(ctypes.Structure):
    _fields_ = [("nLength", ctypes.c_uint32), ("lpSecurityDescriptor", ctypes.c_void_p),
                ("bInheritHandle", ctypes.c_int)]


class Advapi32Acl:
    """The real API. Only constructed on Windows (ctypes.WinDLL exists only there)."""

    def __init__(self) -> None:
        windll = getattr(ctypes, "WinDLL")  # noqa: B009
        self._last_error = getattr(ctypes, "get_last_error")  # noqa: B009
        self._k = k = windll("kernel32", use_last_error=True)
        self._a = a = windll("advapi32", use_last_error=True)
        vp, u32, wstr = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_wchar_p
        k.GetCurrentProcess.restype = vp
        k.LocalFree.argtypes = [vp]
        k.CloseHandle.argtypes = [vp]
        k.CreateDirectoryW.argtypes = [wstr, ctypes.POINTER(_SecurityAttributes)]
        k.CreateFileW.argtypes = [wstr, u32, u32, ctypes.POINTER(_SecurityAttributes), u32,
                                  u32, vp]
        k.CreateFileW.restype = vp
        a.OpenProcessToken.argtypes = [vp, u32, ctypes.POINTER(vp)]
        a.GetTokenInformation.argtypes = [vp, ctypes.c_int, vp, u32, ctypes.POINTER(u32)]
        a.ConvertSidToStringSidW.argtypes = [vp, ctypes.POINTER(wstr)]
        a.ConvertStringSecurityDescriptorToSecurityDescriptorW.argtypes = [
            wstr, u32, ctypes.POINTER(vp), ctypes.POINTER(u32)]
        a.GetNamedSecurityInfoW.argtypes = [wstr, ctypes.c_int, u32, vp, vp, vp, vp,
                                            ctypes.POINTER(vp)]
        a.GetNamedSecurityInfoW.restype = u32
        a.ConvertSecurityDescriptorToStringSecurityDescriptorW.argtypes = [
            vp, u32, u32, ctypes.POINTER(wstr), ctypes.POINTER(u32)]

    def _fail(self, what: str, code: int | None = None) -> OSError:
        code = int(self._last_error()) if code is None else code
        # winerror -> the matching OSError subclass (183 -> FileExistsError, 5 -> Permission).
        return OSError(None, f"{what} failed (Windows error {code})", None, code)

    def user_sid(self) -> str:
        token = ctypes.c_void_p()
        if not self._a.OpenProcessToken(self._k.GetCurrentProcess(), TOKEN_QUERY,
                                        ctypes.byref(token)):
            raise self._fail("OpenProcessToken")
        try:
            size = ctypes.c_uint32()
            self._a.GetTokenInformation(token, TOKEN_USER_CLASS, None, 0, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            if not self._a.GetTokenInformation(token, TOKEN_USER_CLASS, buf, size,
                                               ctypes.byref(size)):
                raise self._fail("GetTokenInformation")
            sid = ctypes.c_void_p.from_buffer(buf).value  # TOKEN_USER.User.Sid comes first
            text = ctypes.c_wchar_p()
            if not self._a.ConvertSidToStringSidW(sid, ctypes.byref(text)):
                raise self._fail("ConvertSidToStringSidW")
            try:
                return str(text.value)
            finally:
                self._k.LocalFree(ctypes.cast(text, ctypes.c_void_p))
        finally:
            self._k.CloseHandle(token)

    def _attributes(self, sddl: str) -> tuple[_SecurityAttributes, ctypes.c_void_p]:
        sd = ctypes.c_void_p()
        if not self._a.ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl, SDDL_REVISION_1, ctypes.byref(sd), None):
            raise self._fail("ConvertStringSecurityDescriptorToSecurityDescriptorW")
        return _SecurityAttributes(ctypes.sizeof(_SecurityAttributes), sd, 0), sd

    def create_directory(self, path: str, sddl: str) -> None:
        sa, sd = self._attributes(sddl)
        try:
            if not self._k.CreateDirectoryW(path, ctypes.byref(sa)):
                raise self._fail(f"CreateDirectoryW({path})")
        finally:
            self._k.LocalFree(sd)

    def create_file(self, path: str, sddl: str) -> int:
        import msvcrt  # Windows only

        sa, sd = self._attributes(sddl)
        try:
            handle = self._k.CreateFileW(path, GENERIC_WRITE, 0, ctypes.byref(sa), CREATE_NEW,
                                         FILE_ATTRIBUTE_NORMAL, None)
            if handle in (None, ctypes.c_void_p(-1).value):
                raise self._fail(f"CreateFileW({path})")
        finally:
            self._k.LocalFree(sd)
        return int(getattr(msvcrt, "open_osfhandle")(handle, os.O_WRONLY))  # noqa: B009

    def read_sddl(self, path: str) -> str:
        sd = ctypes.c_void_p()
        what = OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION
        code = self._a.GetNamedSecurityInfoW(path, SE_FILE_OBJECT, what, None, None, None,
                                             None, ctypes.byref(sd))
        if code != 0:
            raise self._fail(f"GetNamedSecurityInfoW({path})", int(code))
        try:
            text = ctypes.c_wchar_p()
            if not self._a.ConvertSecurityDescriptorToStringSecurityDescriptorW(
                    sd, SDDL_REVISION_1, what, ctypes.byref(text), None):
                raise self._fail("ConvertSecurityDescriptorToStringSecurityDescriptorW")
            try:
                return str(text.value)
            finally:
                self._k.LocalFree(ctypes.cast(text, ctypes.c_void_p))
        finally:
            self._k.LocalFree(sd)


_seam: Seam[AclApi] = Seam(Advapi32Acl)
api = _seam.get
"""The process-wide API (tests replace it with ``set_api``)."""
set_api = _seam.set
"""Install another API (None: the real one on next use); returns the previous one."""
