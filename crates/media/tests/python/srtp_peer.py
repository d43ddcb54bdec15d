"""An independent SRTP peer for tests/srtp_interop.rs: libsrtp (through pylibsrtp) on a UDP
socket on loopback.

It prints `PORT <n>` once bound, then for `seconds` sends a PCMU tone as SRTP every 20 ms to
`remote`, protected with `send_key`, and an SRTCP receiver report about the stream it hears
once a second; it unprotects what comes in with `receive_key` (SRTP and SRTCP, rtcp-mux or
the RTCP port alike), decodes it, and finally prints one JSON line: packets and reports
opened, failures, how many received payloads were readable as sent (clear RTP on the wire),
and the amplitude of the tone heard at the expected frequency and elsewhere.

Usage: srtp_peer.py <remote host:port> <suite 80|32> <send key hex> <receive key hex>
       <tone hz> <expected hz> <seconds>
"""

import json
import math
import socket
import struct
import sys
import time

import pylibsrtp

AMPLITUDE = 8000.0
RATE = 8000


def ulaw_encode(sample):
    """G.711 mu-law of one 16-bit sample."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), clip) + bias
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not magnitude & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_decode(byte):
    """The 16-bit sample of one mu-law byte."""
    byte = ~byte & 0xFF
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if sign else magnitude


def amplitude(samples, hz):
    """Goertzel: the amplitude of the `hz` component of `samples`."""
    n = len(samples)
    coeff = 2.0 * math.cos(2.0 * math.pi * hz / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2.0 * math.sqrt(max(power, 0.0)) / n


def main():
    remote_host, remote_port = sys.argv[1].rsplit(":", 1)
    remote = (remote_host, int(remote_port))
    profile = {
        "80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        "32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    }[sys.argv[2]]
    send_key, receive_key = bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4])
    tone_hz, expected_hz, seconds = float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])

    outbound = pylibsrtp.Session(
        policy=pylibsrtp.Policy(
            key=send_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
        )
    )
    inbound = pylibsrtp.Session(
        policy=pylibsrtp.Policy(
            key=receive_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
        )
    )
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    print(f"PORT {rtp.getsockname()[1]}", flush=True)

    ssrc, sequence, timestamp = 0x5EC0DE, 1000, 0
    heard, stats = [], {"rtp": 0, "rtcp": 0, "failed": 0, "readable_as_sent": 0}
    their_ssrc = None
    start = time.monotonic()
    next_send = start
    next_report = start + 1.0
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        if now >= next_send:
            payload = bytes(
                ulaw_encode(int(AMPLITUDE * math.sin(2 * math.pi * tone_hz * (timestamp + i) / RATE)))
                for i in range(160)
            )
            packet = struct.pack("!BBHII", 0x80, 0, sequence, timestamp, ssrc) + payload
            rtp.sendto(outbound.protect(packet), remote)
            sequence, timestamp = (sequence + 1) & 0xFFFF, timestamp + 160
            next_send += 0.02
        if now >= next_report and their_ssrc is not None:
            report = struct.pack("!BBHI", 0x81, 201, 7, ssrc) + struct.pack(
                "!IIIIII", their_ssrc, 0, 0, 0, 0, 0
            )
            rtp.sendto(outbound.protect_rtcp(report), remote)
            next_report += 1.0
        try:
            data, _ = rtp.recvfrom(2048)
        except BlockingIOError:
            time.sleep(0.002)
            continue
        is_rtcp = len(data) > 1 and 192 <= data[1] <= 223
        try:
            clear = inbound.unprotect_rtcp(data) if is_rtcp else inbound.unprotect(data)
        except pylibsrtp.Error:
            stats["failed"] += 1
            continue
        if is_rtcp:
            stats["rtcp"] += 1
            continue
        stats["rtp"] += 1
        their_ssrc = struct.unpack("!I", clear[8:12])[0]
        if data[12 : len(clear)] == clear[12:]:
            stats["readable_as_sent"] += 1
        heard.extend(ulaw_decode(b) for b in clear[12:])
    tail = heard[-RATE:]
    stats["heard_amplitude"] = amplitude(tail, expected_hz) if tail else 0.0
    stats["elsewhere_amplitude"] = max(
        (amplitude(tail, hz) for hz in (300.0, 1500.0, 2500.0)), default=0.0
    ) if tail else 0.0
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
