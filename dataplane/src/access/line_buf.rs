//! An access line assembled on the stack and appended to its destination in one copy. The line
//! is some 30 short pieces (keys, numbers, ids); pushed one by one onto a `Vec` each paid a
//! capacity check and a `memcpy` call. Into a fixed array a key of known length is a move or
//! two, and a number's digits are written in place: the line's formatting went from 1,152 to 979
//! instructions (callgrind, docs/performance.md).

use std::net::SocketAddr;

/// Room for a whole line of the usual kind (about 300 bytes); what does not fit goes to the
/// destination directly, in order.
const ROOM: usize = 512;

/// A line being built for `out`; whatever it holds is appended to `out` when it is dropped.
pub(super) struct LineBuf<'o> {
    out: &'o mut Vec<u8>,
    buf: [u8; ROOM],
    len: usize,
}

impl<'o> LineBuf<'o> {
    pub(super) fn new(out: &'o mut Vec<u8>) -> Self {
        Self {
            out,
            buf: [0; ROOM],
            len: 0,
        }
    }

    /// Appends `bytes`.
    #[inline(always)]
    pub(super) fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.buf.get_mut(self.len..end) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len = end;
            }
            None => self.put_long(bytes),
        }
    }

    /// Appends what did not fit, after what is held.
    #[cold]
    fn put_long(&mut self, bytes: &[u8]) {
        self.flush();
        self.out.extend_from_slice(bytes);
    }

    /// Moves what is held to the destination.
    fn flush(&mut self) {
        self.out.extend_from_slice(&self.buf[..self.len]);
        self.len = 0;
    }

    /// Appends `n` in decimal.
    #[inline(always)]
    pub(super) fn int(&mut self, n: u64) {
        let digits = n.checked_ilog10().map_or(1, |d| d as usize + 1);
        self.digits(n, digits);
    }

    /// Appends the `digits` (at most 20, a `u64`'s most) lowest decimal digits of `n`, with
    /// leading zeros.
    #[inline(always)]
    pub(super) fn digits(&mut self, n: u64, digits: usize) {
        if self.len + digits > ROOM {
            self.flush();
        }
        let end = self.len + digits;
        let Some(room) = self.buf.get_mut(self.len..end) else {
            return;
        };
        // Two digits a step, from a table, as `itoa` does; most values fit 32 bits, whose
        // division is the cheaper.
        match u32::try_from(n) {
            Ok(n) => write_digits(room, n, 100u32),
            Err(_) => write_digits(room, n, 100u64),
        }
        self.len = end;
    }

    /// Appends a peer address as `SocketAddr`'s `Display` writes it.
    pub(super) fn client(&mut self, client: SocketAddr) {
        match client {
            SocketAddr::V4(a) => {
                let [a0, a1, a2, a3] = a.ip().octets();
                self.int(a0.into());
                for octet in [a1, a2, a3] {
                    self.put(b".");
                    self.int(octet.into());
                }
                self.put(b":");
                self.int(a.port().into());
            }
            SocketAddr::V6(a) => {
                use std::io::Write;
                self.flush();
                // Writing to a `Vec` cannot fail.
                let _ = write!(self.out, "{a}");
            }
        }
    }
}

/// "00" to "99".
const PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Fills `room` with the lowest decimal digits of `n`, right-aligned, leading zeros first.
/// `hundred` is 100 in `n`'s type.
#[inline(always)]
fn write_digits<N>(room: &mut [u8], mut n: N, hundred: N)
where
    N: Copy + std::ops::Rem<Output = N> + std::ops::DivAssign + Into<u64>,
{
    let mut end = room.len();
    while end >= 2 {
        // Below 100, so below 200 doubled.
        let at = ((n % hundred).into() * 2) as usize;
        room[end - 2] = PAIRS[at];
        room[end - 1] = PAIRS[at + 1];
        n /= hundred;
        end -= 2;
    }
    if end == 1 {
        room[0] = PAIRS[((n % hundred).into() * 2) as usize + 1];
    }
}

impl Drop for LineBuf<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_arrive_in_order_whatever_their_length() {
        let long = vec![b'L'; ROOM + 7];
        let mut out = b"before ".to_vec();
        {
            let mut line = LineBuf::new(&mut out);
            line.put(b"a=");
            line.int(0);
            line.put(b" b=");
            line.int(u64::MAX);
            line.put(b" ");
            line.put(&long);
            line.put(b" c=");
            line.digits(42, 6);
            for _ in 0..ROOM / 4 {
                line.put(b"xyz ");
            }
            line.int(123_456_789);
        }
        let mut expected = b"before a=0 b=18446744073709551615 ".to_vec();
        expected.extend_from_slice(&long);
        expected.extend_from_slice(b" c=000042");
        expected.extend_from_slice(&b"xyz ".repeat(ROOM / 4));
        expected.extend_from_slice(b"123456789");
        assert_eq!(out, expected);
        // Digits that no longer fit follow what is held.
        let mut out = Vec::new();
        {
            let mut line = LineBuf::new(&mut out);
            line.put(&[b'a'; ROOM - 5]);
            line.digits(7, 20);
        }
        assert_eq!(out.len(), ROOM - 5 + 20);
        assert!(out.ends_with(b"a00000000000000000007"));
    }

    #[test]
    fn numbers_and_peers_read_as_display_writes_them() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            65_535,
            1_000_000,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            LineBuf::new(&mut out).int(n);
            assert_eq!(out, n.to_string().into_bytes());
        }
        for peer in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.2.3.4:80",
            "[2001:db8::7%3]:8443",
        ] {
            let peer: SocketAddr = peer.parse().expect("addr");
            let mut out = b"x".to_vec();
            LineBuf::new(&mut out).client(peer);
            assert_eq!(out, format!("x{peer}").into_bytes());
        }
    }
}
