//! The classic libpcap file format, as far as UDP over IPv4 on Ethernet goes: written for SIPp's
//! `play_pcap_audio`, which replays each datagram with the capture's timing, and read for the
//! RFC 4733 captures SIPp ships.

use std::time::Duration;

/// Ethernet, the link type of every capture here.
const LINKTYPE_ETHERNET: u32 = 1;
/// Bytes of the Ethernet header.
const ETHERNET: usize = 14;

/// A capture being written: the global header, then one record per datagram.
#[derive(Debug, Clone)]
pub(crate) struct PcapWriter {
    bytes: Vec<u8>,
}

impl PcapWriter {
    /// An empty capture: microsecond timestamps, version 2.4, Ethernet.
    pub(crate) fn new() -> Self {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        bytes.extend_from_slice(&2u16.to_le_bytes());
        bytes.extend_from_slice(&4u16.to_le_bytes());
        bytes.extend_from_slice(&0i32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&65535u32.to_le_bytes());
        bytes.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        Self { bytes }
    }

    /// Appends `payload` as a UDP datagram from 127.0.0.1:6000 to 127.0.0.1:6002 sent `at` after
    /// the capture began (SIPp sends it to the call's media port, from its own). A payload larger
    /// than a datagram is cut to fit.
    pub(crate) fn udp(&mut self, at: Duration, payload: &[u8]) {
        let payload = payload.get(..payload.len().min(1400)).unwrap_or_default();
        let udp_len = 8 + payload.len() as u16;
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(ETHERNET + usize::from(ip_len));
        frame.extend_from_slice(&[0; 12]);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&ip_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        frame.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&6002u16.to_be_bytes());
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(payload);
        let seconds = u32::try_from(at.as_secs()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&seconds.to_le_bytes());
        self.bytes
            .extend_from_slice(&at.subsec_micros().to_le_bytes());
        self.bytes
            .extend_from_slice(&(frame.len() as u32).to_le_bytes());
        self.bytes
            .extend_from_slice(&(frame.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(&frame);
    }

    /// The file's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// `n` bytes at `at`, or why not.
fn take(bytes: &[u8], at: usize, n: usize) -> Result<&[u8], String> {
    bytes
        .get(at..at.saturating_add(n))
        .ok_or_else(|| format!("cut short at byte {at}"))
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], String> {
    let mut out = [0; N];
    out.copy_from_slice(take(bytes, at, N)?);
    Ok(out)
}

/// The UDP payloads of a capture of UDP over IPv4 on Ethernet, each with its time since the
/// first record. Either byte order, microsecond or nanosecond timestamps; a record that is not
/// UDP over IPv4 is an error, not skipped, so a capture cannot quietly lose packets.
pub(crate) fn read_udp(bytes: &[u8]) -> Result<Vec<(Duration, &[u8])>, String> {
    let magic = array::<4>(bytes, 0)?;
    let (little, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        _ => return Err("not a pcap file (unknown magic number)".into()),
    };
    let word = |at: usize| -> Result<u32, String> {
        let b = array::<4>(bytes, at)?;
        Ok(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let link = word(20)?;
    if link != LINKTYPE_ETHERNET {
        return Err(format!("link type {link}, not Ethernet"));
    }
    let mut records = Vec::new();
    let mut first = None;
    let mut at = 24;
    while at < bytes.len() {
        let fraction = u64::from(word(at + 4)?);
        let stamp = Duration::from_secs(u64::from(word(at)?))
            + if nanos {
                Duration::from_nanos(fraction)
            } else {
                Duration::from_micros(fraction)
            };
        let length = word(at + 8)? as usize;
        let frame = take(bytes, at + 16, length)?;
        at += 16 + length;
        let since = stamp.saturating_sub(*first.get_or_insert(stamp));
        records.push((since, udp_payload(frame)?));
    }
    Ok(records)
}

/// The UDP payload of one Ethernet frame carrying IPv4.
fn udp_payload(frame: &[u8]) -> Result<&[u8], String> {
    if array::<2>(frame, 12)? != [0x08, 0x00] {
        return Err("a frame that is not IPv4".into());
    }
    let [version_ihl] = array::<1>(frame, ETHERNET)?;
    if version_ihl >> 4 != 4 || array::<1>(frame, ETHERNET + 9)? != [17] {
        return Err("a packet that is not UDP over IPv4".into());
    }
    let udp = ETHERNET + usize::from(version_ihl & 0x0f) * 4;
    let length = usize::from(u16::from_be_bytes(array::<2>(frame, udp + 4)?));
    take(frame, udp + 8, length.saturating_sub(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let mut w = PcapWriter::new();
        w.udp(Duration::from_millis(1000), b"first");
        w.udp(Duration::from_micros(1_020_250), b"second");
        let records = read_udp(w.bytes()).unwrap();
        assert_eq!(
            records,
            [
                (Duration::ZERO, &b"first"[..]),
                (Duration::from_micros(20_250), &b"second"[..])
            ]
        );
    }

    #[test]
    fn a_cut_or_foreign_file_is_an_error() {
        let mut w = PcapWriter::new();
        w.udp(Duration::ZERO, b"payload");
        let bytes = w.bytes();
        assert!(read_udp(&bytes[..bytes.len() - 1]).is_err());
        assert!(read_udp(b"GIF89a").is_err());
        let mut other_link = bytes.to_vec();
        other_link[20] = 113;
        assert!(read_udp(&other_link).is_err());
    }
}
