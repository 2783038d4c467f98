//! The `bpf(2)` side of AF_XDP: the `XSKMAP` that holds one socket per receive queue, and
//! the XDP program that redirects each received frame to the socket of its queue.
//!
//! Layouts follow `<linux/bpf.h>` (`union bpf_attr`, `struct bpf_insn`, `struct xdp_md`);
//! the instruction encoding follows the kernel's `Documentation/bpf/standardization/
//! instruction-set.rst`. No libbpf: the program is six instruction slots, assembled below.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::XdpError;

/// `enum bpf_cmd` values used here.
const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;

/// `BPF_MAP_TYPE_XSKMAP`.
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// `BPF_PROG_TYPE_XDP`.
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_FUNC_redirect_map`: `long bpf_redirect_map(map, u64 key, u64 flags)`.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// `src_reg` value of a 64-bit immediate load that the verifier resolves from a map fd.
const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `enum xdp_action`: hand the frame to the kernel's stack.
const XDP_PASS: i32 = 2;
/// Offset of `rx_queue_index` in `struct xdp_md`.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

/// Verifier log buffer for a failed load; the log of a six-instruction program is tiny, but
/// a rejected one explains itself in a few hundred bytes.
const VERIFIER_LOG_SIZE: usize = 64 * 1024;

/// One eBPF instruction, `struct bpf_insn`: opcode, destination and source register packed
/// into one byte (dst in the low nibble on little-endian), 16-bit offset, 32-bit immediate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BpfInsn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const _: () = assert!(size_of::<BpfInsn>() == 8);

impl BpfInsn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
        BpfInsn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
    }

    /// `dst = *(u32 *)(src + off)`: `BPF_LDX | BPF_MEM | BPF_W`.
    pub(crate) const fn load_u32(dst: u8, src: u8, off: i16) -> BpfInsn {
        BpfInsn::new(0x61, dst, src, off, 0)
    }

    /// `dst = imm` (64-bit): `BPF_ALU64 | BPF_MOV | BPF_K`.
    pub(crate) const fn mov64_imm(dst: u8, imm: i32) -> BpfInsn {
        BpfInsn::new(0xb7, dst, 0, 0, imm)
    }

    /// `dst = map(fd)`: the two-slot `BPF_LD | BPF_IMM | BPF_DW` with `BPF_PSEUDO_MAP_FD`.
    pub(crate) const fn load_map_fd(dst: u8, fd: RawFd) -> [BpfInsn; 2] {
        [BpfInsn::new(0x18, dst, BPF_PSEUDO_MAP_FD, 0, fd), BpfInsn::new(0, 0, 0, 0, 0)]
    }

    /// Call helper number `helper`: `BPF_JMP | BPF_CALL`.
    pub(crate) const fn call(helper: i32) -> BpfInsn {
        BpfInsn::new(0x85, 0, 0, 0, helper)
    }

    /// Return r0: `BPF_JMP | BPF_EXIT`.
    pub(crate) const fn exit() -> BpfInsn {
        BpfInsn::new(0x95, 0, 0, 0, 0)
    }
}

/// The redirect program:
///
/// ```text
/// r2 = ctx->rx_queue_index        ; key
/// r1 = &xskmap                    ; map (two slots)
/// r3 = XDP_PASS                   ; flags: the action when the key holds no socket (5.3+)
/// call bpf_redirect_map
/// exit                            ; r0 = XDP_REDIRECT or XDP_PASS
/// ```
///
/// Frames of a queue without a socket go to the kernel stack, so attaching the program
/// before the sockets exist (or after an instance died) does not black-hole the interface.
pub(crate) fn redirect_program(map_fd: RawFd) -> [BpfInsn; 6] {
    let [map_lo, map_hi] = BpfInsn::load_map_fd(1, map_fd);
    [
        BpfInsn::load_u32(2, 1, XDP_MD_RX_QUEUE_INDEX),
        map_lo,
        map_hi,
        BpfInsn::mov64_imm(3, XDP_PASS),
        BpfInsn::call(BPF_FUNC_REDIRECT_MAP),
        BpfInsn::exit(),
    ]
}

/// The `BPF_MAP_CREATE` member of `union bpf_attr`, up to `map_extra`.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    map_ifindex: u32,
    btf_fd: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
    btf_vmlinux_value_type_id: u32,
    map_extra: u64,
}

const _: () = assert!(size_of::<MapCreateAttr>() == 72);

/// The `BPF_MAP_*_ELEM` member of `union bpf_attr`.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const _: () = assert!(size_of::<MapElemAttr>() == 32);

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

const _: () = assert!(size_of::<ProgLoadAttr>() == 72);

/// The `BPF_OBJ_GET_INFO_BY_FD` member of `union bpf_attr`.
#[repr(C)]
struct ObjInfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The first fields of `struct bpf_prog_info`; the kernel copies only `info_len` bytes.
#[repr(C)]
#[derive(Default)]
struct ProgInfoHead {
    prog_type: u32,
    id: u32,
}

/// Issues `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
///
/// `T` must be the `union bpf_attr` member that `cmd` reads, and every pointer stored in
/// `attr` (as a u64) must be valid for the reads and writes `cmd` performs on it.
unsafe fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller guarantees `attr` matches `cmd` and the pointers it embeds are
    // valid; the size passed is exactly the size of `*attr`, so the kernel reads no further.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>() as libc::c_uint)
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

fn fd_from_syscall(rc: libc::c_long) -> io::Result<OwnedFd> {
    let raw = RawFd::try_from(rc).map_err(|_| io::Error::other("bpf() returned a bad fd"))?;
    // SAFETY: bpf() returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn object_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    // The kernel accepts [A-Za-z0-9_.] and needs a NUL within the 16 bytes.
    for (slot, byte) in out.iter_mut().zip(name.bytes().take(15)) {
        *slot = if byte.is_ascii_alphanumeric() || byte == b'.' { byte } else { b'_' };
    }
    out
}

/// An `XSKMAP`: entry `q` holds the AF_XDP socket that receives the frames of rx queue `q`.
///
/// The map fd is an ordinary descriptor: it survives fork(2), so the control plane can
/// create the map and each kernel-instance process inserts its own socket.
#[derive(Debug)]
pub struct XskMap {
    fd: OwnedFd,
    max_entries: u32,
}

impl XskMap {
    /// Creates a map with room for queues `0..max_entries` (needs CAP_BPF or root).
    pub fn create(max_entries: u32) -> Result<XskMap, XdpError> {
        if max_entries == 0 {
            return Err(XdpError::InvalidConfig("an XSKMAP needs at least one entry".into()));
        }
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries,
            map_name: object_name("netpop_xsks"),
            ..MapCreateAttr::default()
        };
        // SAFETY: MapCreateAttr is the BPF_MAP_CREATE member of bpf_attr and holds no
        // pointers.
        let rc = unsafe { bpf(BPF_MAP_CREATE, &mut attr) }
            .map_err(|e| XdpError::syscall("bpf(BPF_MAP_CREATE, XSKMAP)", e))?;
        let fd = fd_from_syscall(rc).map_err(|e| XdpError::syscall("bpf(BPF_MAP_CREATE)", e))?;
        Ok(XskMap { fd, max_entries })
    }

    /// Adopts an inherited map descriptor (for example one passed across fork(2)).
    pub fn from_fd(fd: OwnedFd, max_entries: u32) -> XskMap {
        XskMap { fd, max_entries }
    }

    /// How many queue entries the map has.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Points entry `queue` at AF_XDP socket `socket`. The kernel removes the entry by itself
    /// when the socket is closed.
    pub fn insert(&self, queue: u32, socket: BorrowedFd<'_>) -> Result<(), XdpError> {
        let value = u32::try_from(socket.as_raw_fd())
            .map_err(|_| XdpError::InvalidConfig("negative socket descriptor".into()))?;
        self.update(BPF_MAP_UPDATE_ELEM, queue, Some(&value))
            .map_err(|e| XdpError::syscall("bpf(BPF_MAP_UPDATE_ELEM, XSKMAP)", e))
    }

    /// Clears entry `queue`, so its frames fall back to the kernel stack.
    pub fn remove(&self, queue: u32) -> Result<(), XdpError> {
        self.update(BPF_MAP_DELETE_ELEM, queue, None)
            .map_err(|e| XdpError::syscall("bpf(BPF_MAP_DELETE_ELEM, XSKMAP)", e))
    }

    fn update(&self, cmd: libc::c_int, key: u32, value: Option<&u32>) -> io::Result<()> {
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: value.map_or(0, |v| v as *const u32 as u64),
            flags: 0, // BPF_ANY
        };
        // SAFETY: MapElemAttr is the BPF_MAP_*_ELEM member of bpf_attr; `key` and `value`
        // point at live u32s matching the map's 4-byte key and value sizes, and the kernel
        // only reads them.
        unsafe { bpf(cmd, &mut attr) }.map(|_| ())
    }
}

impl AsFd for XskMap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A loaded XDP program. Closing it does not detach it: an attachment holds its own
/// reference (see [`super::netlink::XdpAttachment`]).
#[derive(Debug)]
pub struct XdpProgram {
    fd: OwnedFd,
}

impl XdpProgram {
    /// Loads the queue-index redirect program bound to `map` (needs CAP_BPF + CAP_NET_ADMIN
    /// or root). A verifier rejection comes back as [`XdpError::ProgramRejected`] with the
    /// verifier's log.
    pub fn load_redirect(map: &XskMap) -> Result<XdpProgram, XdpError> {
        let insns = redirect_program(map.fd.as_raw_fd());
        let fd = load_xdp(&insns, "netpop_xsk")?;
        Ok(XdpProgram { fd })
    }

    /// The kernel's id for this program (what `ip link` and `bpftool prog` show).
    pub fn id(&self) -> Result<u32, XdpError> {
        let mut info = ProgInfoHead::default();
        let mut attr = ObjInfoAttr {
            bpf_fd: self.fd.as_raw_fd() as u32,
            info_len: size_of::<ProgInfoHead>() as u32,
            info: &mut info as *mut ProgInfoHead as u64,
        };
        // SAFETY: ObjInfoAttr is the BPF_OBJ_GET_INFO_BY_FD member; `info` points at a live,
        // writable ProgInfoHead of `info_len` bytes, the most the kernel writes.
        unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }
            .map_err(|e| XdpError::syscall("bpf(BPF_OBJ_GET_INFO_BY_FD)", e))?;
        Ok(info.id)
    }
}

impl AsFd for XdpProgram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Loads `insns` as an XDP program named `name`. On rejection, loads again with the verifier
/// log enabled (the way libbpf does, so success costs no log) and returns that log.
pub(crate) fn load_xdp(insns: &[BpfInsn], name: &str) -> Result<OwnedFd, XdpError> {
    let license = c"Dual MIT/GPL";
    match prog_load(insns, name, license, None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; VERIFIER_LOG_SIZE];
            let source = match prog_load(insns, name, license, Some(&mut log)) {
                // Loaded on the second try (a transient failure such as EAGAIN): fine.
                Ok(fd) => return Ok(fd),
                Err(second) => second,
            };
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let verifier_log = String::from_utf8_lossy(&log[..end]).trim_end().to_owned();
            if verifier_log.is_empty() {
                return Err(XdpError::syscall("bpf(BPF_PROG_LOAD, XDP)", first));
            }
            Err(XdpError::ProgramRejected { source, verifier_log })
        }
    }
}

fn prog_load(
    insns: &[BpfInsn],
    name: &str,
    license: &CStr,
    log: Option<&mut Vec<u8>>,
) -> io::Result<OwnedFd> {
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        prog_name: object_name(name),
        ..ProgLoadAttr::default()
    };
    // SAFETY: ProgLoadAttr is the BPF_PROG_LOAD member of bpf_attr; `insns` points at
    // `insn_cnt` instructions, `license` at a NUL-terminated string, and `log_buf` (when set)
    // at `log_size` writable bytes, all alive for the call.
    let rc = unsafe { bpf(BPF_PROG_LOAD, &mut attr) }?;
    fd_from_syscall(rc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::netns::skip_unless_root;

    #[test]
    fn redirect_program_encodes_the_documented_instructions() {
        let program = redirect_program(7);
        // ldxw r2, [r1 + 16]
        assert_eq!(program[0], BpfInsn { code: 0x61, regs: 0x12, off: 16, imm: 0 });
        // lddw r1, map_fd(7): src_reg = BPF_PSEUDO_MAP_FD, upper half zero
        assert_eq!(program[1], BpfInsn { code: 0x18, regs: 0x11, off: 0, imm: 7 });
        assert_eq!(program[2], BpfInsn { code: 0, regs: 0, off: 0, imm: 0 });
        // mov r3, XDP_PASS; call 51; exit
        assert_eq!(program[3], BpfInsn { code: 0xb7, regs: 0x03, off: 0, imm: 2 });
        assert_eq!(program[4], BpfInsn { code: 0x85, regs: 0, off: 0, imm: 51 });
        assert_eq!(program[5], BpfInsn { code: 0x95, regs: 0, off: 0, imm: 0 });
    }

    #[test]
    fn object_names_are_sanitised_and_terminated() {
        assert_eq!(&object_name("netpop_xsk")[..11], b"netpop_xsk\0");
        assert_eq!(&object_name("a-b c")[..6], b"a_b_c\0");
        assert_eq!(object_name("0123456789abcdefXYZ")[15], 0);
    }

    #[test]
    fn the_verifier_accepts_the_redirect_program() {
        if skip_unless_root("the_verifier_accepts_the_redirect_program") {
            return;
        }
        let map = XskMap::create(4).unwrap();
        let program = XdpProgram::load_redirect(&map).unwrap();
        assert!(program.id().unwrap() > 0);
        assert_eq!(map.max_entries(), 4);
        // An empty entry can be removed (ENOENT is not raised for XSKMAP deletes of
        // in-range keys) but an out-of-range one cannot.
        assert!(map.remove(9).is_err());
    }

    #[test]
    fn a_rejected_program_returns_the_verifier_log() {
        if skip_unless_root("a_rejected_program_returns_the_verifier_log") {
            return;
        }
        // Returns r0 without ever writing it.
        let err = load_xdp(&[BpfInsn::exit()], "netpop_bad").unwrap_err();
        match &err {
            XdpError::ProgramRejected { verifier_log, .. } => {
                assert!(verifier_log.contains("R0 !read_ok"), "log: {verifier_log}");
            }
            other => panic!("expected ProgramRejected, got {other:?}"),
        }
        assert!(err.to_string().contains("R0"), "{err}");
    }

    #[test]
    fn inserting_a_non_socket_into_the_map_is_refused() {
        if skip_unless_root("inserting_a_non_socket_into_the_map_is_refused") {
            return;
        }
        let map = XskMap::create(2).unwrap();
        let not_a_socket = std::fs::File::open("/dev/null").unwrap();
        assert!(map.insert(0, not_a_socket.as_fd()).is_err());
    }
}
