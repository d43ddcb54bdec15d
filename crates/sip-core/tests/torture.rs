//! RFC 4475, every message of its section 3, each with the behaviour the RFC expects of a user
//! agent like ours; then more malformed and tricky messages in the same manner.
//!
//! The RFC's messages are written out below from its text (its `<allOneLine>` lines joined, its
//! `<hex>` runs as `\x` escapes). Each goes through the endpoint's whole receive path
//! ([`Endpoint::handle_message`], which runs [`validate`] first) and the test asserts the status line
//! of what it transmits: `200` for OPTIONS, `405` for REGISTER and MESSAGE (we are no registrar),
//! `480` for an INVITE we have no call for (inbound calls are a later issue), `501`, `416`, `420`,
//! `415`, `406`, `505`, or `400` with a reason naming the fault; or nothing at all for responses
//! nobody asked for and messages that cannot be answered. None may panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Instant;

use dialtone_sip_core::validate::{DropReason, Inbound, RejectReason, validate};
use dialtone_sip_core::{Endpoint, EndpointConfig, Transport};

/// RFC 4475 §3.1.1.1 (`wsinv`).
const WSINV: &[u8] = b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r
TO :\r
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r
  ;\r
  tag = 98asjd8\r
MaX-fOrWaRdS: 0068\r
Call-ID: wsinv.ndaksdj@192.0.2.1\r
Content-Length   : 150\r
cseq: 0009\r
  INVITE\r
Via  : SIP  /   2.0\r
 /UDP\r
    192.0.2.2;branch=390skdjuw\r
s :\r
NewFangledHeader:   newfangled value\r
 continued newfangled value\r
UnknownHeaderWithUnusualValue: ;;,,;;,;\r
Content-Type: application/sdp\r
Route:\r
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r
v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r
  branch  =   z9hG4bK9ikj8  ,\r
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r
 z9hG4bK30239\r
m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\r
      newvalue ;\r
  secondparam ; q = 0.33\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.3\r
s=-\r
c=IN IP4 192.0.2.4\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.1.2 (`intmeth`).
const INTMETH: &[u8] = b"!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0\r
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\r
To: \"BEL:\\\x07 NUL:\\\0 DEL:\\\x7f\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>\r
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\xd1\x80\xd0\xb0\xd0\xb1\xd0\xbe\xd1\x82\xd0\xb0\xd1\x8e\xd1\x89\xd0\xb8\xd0\xb9\";tag=_token~1'+`*%!-.\r
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\r
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\r
Max-Forwards: 255\r
extensionHeader-!.%*+_`'~:\xef\xbb\xbf\xe5\xa4\xa7\xe5\x81\x9c\xe9\x9b\xbb\r
Content-Length: 0\r
\r
";

/// RFC 4475 §3.1.1.3 (`esc01`).
const ESC01: &[u8] = b"INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0\r
To: sip:%75se%72@example.com\r
From: <sip:I%20have%20spaces@example.net>;tag=938\r
Max-Forwards: 87\r
i: esc01.239409asdfakjkn23onasd0-3234\r
CSeq: 234234 INVITE\r
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw\r
C: application/sdp\r
Contact:\r
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>\r
Content-Length: 150\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.1\r
s=-\r
c=IN IP4 192.0.2.1\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.1.4 (`escnull`).
const ESCNULL: &[u8] = b"REGISTER sip:example.com SIP/2.0\r
To: sip:null-%00-null@example.com\r
From: sip:null-%00-null@example.com;tag=839923423\r
Max-Forwards: 70\r
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd\r
CSeq: 14398234 REGISTER\r
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw\r
Contact: <sip:%00@host5.example.com>\r
Contact: <sip:%00%00@host5.example.com>\r
L:0\r
\r
";

/// RFC 4475 §3.1.1.5 (`esc02`).
const ESC02: &[u8] = b"RE%47IST%45R sip:registrar.example.com SIP/2.0\r
To: \"%Z%45\" <sip:resource@example.com>\r
From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23\r
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf\r
Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234\r
CSeq: 29344 RE%47IST%45R\r
Max-Forwards: 70\r
Contact: <sip:alias1@host1.example.com>\r
C%6Fntact: <sip:alias2@host2.example.com>\r
Contact: <sip:alias3@host3.example.com>\r
l: 0\r
\r
";

/// RFC 4475 §3.1.1.6 (`lwsdisp`).
const LWSDISP: &[u8] = b"OPTIONS sip:user@example.com SIP/2.0\r
To: sip:user@example.com\r
From: caller<sip:caller@example.com>;tag=323\r
Max-Forwards: 70\r
Call-ID: lwsdisp.1234abcd@funky.example.com\r
CSeq: 60 OPTIONS\r
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw\r
l: 0\r
\r
";

/// RFC 4475 §3.1.1.7 (`longreq`).
const LONGREQ: &[u8] = b"INVITE sip:user@example.com SIP/2.0\r
To: \"I have a user name of extremeextremeextremeextremeextremeextremeextremeextremeextremeextreme proportion\"<sip:user@example.com:6000;unknownparam1=verylonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglongvalue;longparamnamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamename=shortvalue;verylonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglongParameterNameWithNoValue>\r
F: sip:amazinglylongcallernameamazinglylongcallernameamazinglylongcallernameamazinglylongcallernameamazinglylongcallername@example.net;tag=12982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982424;unknownheaderparamnamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamename=unknowheaderparamvaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevalue;unknownValuelessparamnameparamnameparamnameparamnameparamnameparamnameparamnameparamnameparamnameparamname\r
Call-ID: longreq.onereallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallylongcallid\r
CSeq: 3882340 INVITE\r
Unknown-LongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLong-Name: unknown-longlonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglong-value; unknown-longlonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglong-parameter-name = unknown-longlonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglong-parameter-value\r
Via: SIP/2.0/TCP sip33.example.com\r
v: SIP/2.0/TCP sip32.example.com\r
V: SIP/2.0/TCP sip31.example.com\r
Via: SIP/2.0/TCP sip30.example.com\r
ViA: SIP/2.0/TCP sip29.example.com\r
VIa: SIP/2.0/TCP sip28.example.com\r
VIA: SIP/2.0/TCP sip27.example.com\r
via: SIP/2.0/TCP sip26.example.com\r
viA: SIP/2.0/TCP sip25.example.com\r
vIa: SIP/2.0/TCP sip24.example.com\r
vIA: SIP/2.0/TCP sip23.example.com\r
V :  SIP/2.0/TCP sip22.example.com\r
v :  SIP/2.0/TCP sip21.example.com\r
V  : SIP/2.0/TCP sip20.example.com\r
v  : SIP/2.0/TCP sip19.example.com\r
Via : SIP/2.0/TCP sip18.example.com\r
Via  : SIP/2.0/TCP sip17.example.com\r
Via: SIP/2.0/TCP sip16.example.com\r
Via: SIP/2.0/TCP sip15.example.com\r
Via: SIP/2.0/TCP sip14.example.com\r
Via: SIP/2.0/TCP sip13.example.com\r
Via: SIP/2.0/TCP sip12.example.com\r
Via: SIP/2.0/TCP sip11.example.com\r
Via: SIP/2.0/TCP sip10.example.com\r
Via: SIP/2.0/TCP sip9.example.com\r
Via: SIP/2.0/TCP sip8.example.com\r
Via: SIP/2.0/TCP sip7.example.com\r
Via: SIP/2.0/TCP sip6.example.com\r
Via: SIP/2.0/TCP sip5.example.com\r
Via: SIP/2.0/TCP sip4.example.com\r
Via: SIP/2.0/TCP sip3.example.com\r
Via: SIP/2.0/TCP sip2.example.com\r
Via: SIP/2.0/TCP sip1.example.com\r
Via: SIP/2.0/TCP host.example.com;received=192.0.2.5;branch=verylonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglongbranchvalue\r
Max-Forwards: 70\r
Contact: <sip:amazinglylongcallernameamazinglylongcallernameamazinglylongcallernameamazinglylongcallernameamazinglylongcallername@host5.example.net>\r
Content-Type: application/sdp\r
l: 150\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.1\r
s=-\r
c=IN IP4 192.0.2.1\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.1.8 (`dblreq`).
const DBLREQ: &[u8] = b"REGISTER sip:example.com SIP/2.0\r
To: sip:j.user@example.com\r
From: sip:j.user@example.com;tag=43251j3j324\r
Max-Forwards: 8\r
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412\r
Contact: sip:j.user@host.example.com\r
CSeq: 8 REGISTER\r
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492\r
Content-Length: 0\r
\r
\r
INVITE sip:joe@example.com SIP/2.0\r
t: sip:joe@example.com\r
From: sip:caller@example.net;tag=141334\r
Max-Forwards: 8\r
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15\r
CSeq: 8 INVITE\r
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234\r
Content-Type: application/sdp\r
Content-Length: 150\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.15\r
s=-\r
c=IN IP4 192.0.2.15\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m =video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
\r
";

/// RFC 4475 §3.1.1.9 (`semiuri`).
const SEMIURI: &[u8] = b"OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0\r
To: sip:j_user@example.com\r
From: sip:caller@example.org;tag=33242\r
Max-Forwards: 3\r
Call-ID: semiuri.0ha0isndaksdj\r
CSeq: 8 OPTIONS\r
Accept: application/sdp, application/pkcs7-mime,\r
        multipart/mixed, multipart/signed,\r
        message/sip, message/sipfrag\r
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw\r
l: 0\r
\r
";

/// RFC 4475 §3.1.1.10 (`transports`).
const TRANSPORTS: &[u8] = b"OPTIONS sip:user@example.com SIP/2.0\r
To: sip:user@example.com\r
From: <sip:caller@example.com>;tag=323\r
Max-Forwards: 70\r
Call-ID:  transports.kijh4akdnaqjkwendsasfdj\r
Accept: application/sdp\r
CSeq: 60 OPTIONS\r
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw\r
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf\r
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj\r
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en\r
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee\r
l: 0\r
\r
";

/// RFC 4475 §3.1.1.11 (`mpart01`).
const MPART01: &[u8] = b"MESSAGE sip:kumiko@example.org SIP/2.0\r
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport\r
Max-Forwards: 70\r
Route: <sip:127.0.0.1:5080>\r
Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuLIK0YWVKZhKv9Mj8UeXqkMVbnVq37CD+813gvYjcBUaZngQmXc9WNZSDNGCzA+fWl9MEUHWIZo1CeJebdY/XlgKeTa0Olvq0rt70Q5jiSfbqMJmQFteeivUhkMWYUA=\r
Contact: <sip:fluffy@127.0.0.1:5070>\r
To: <sip:kumiko@example.org>\r
From: <sip:fluffy@example.com>;tag=2fb0dcc9\r
Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..\r
CSeq: 1 MESSAGE\r
Content-Transfer-Encoding: binary\r
Content-Type: multipart/mixed;boundary=7a9cbec02ceef655\r
Date: Sat, 15 Oct 2005 04:44:56 GMT\r
User-Agent: SIPimp.org/0.2.5 (curses)\r
Content-Length: 553\r
\r
--7a9cbec02ceef655\r
Content-Type: text/plain\r
Content-Transfer-Encoding: binary\r
\r
Hello\r
--7a9cbec02ceef655\r
Content-Type: application/octet-stream\r
Content-Transfer-Encoding: binary\r
\r
0\x82\x01R\x06\t*\x86H\x86\xf7\r\x01\x07\x02\xa0\x82\x01C0\x82\x01?\x02\x01\x011\t0\x07\x06\x05+\x0e\x03\x02\x1a0\x0b\x06\t*\x86H\x86\xf7\r\x01\x07\x011\x82\x01 0\x82\x01\x1c\x02\x01\x010|0p1\x0b0\t\x06\x03U\x04\x06\x13\x02US1\x130\x11\x06\x03U\x04\x08\x13\nCalifornia1\x110\x0f\x06\x03U\x04\x07\x13\x08San Jose1\x0e0\x0c\x06\x03U\x04\n\x13\x05sipit1)0'\x06\x03U\x04\x0b\x13 Sipit Test Certificate Authority\x02\x08\x01\x95\0q\x023\x01\x130\x07\x06\x05+\x0e\x03\x02\x1a0\r\x06\t*\x86H\x86\xf7\r\x01\x01\x01\x05\0\x04\x81\x80\x8e\xf4f\xf9H\xf0R-\xd2\xe5\x97\x8e\x9d\x95\xaa\xe9\xf2\xfe\x15\xa0fYqb\x92\xe8\xda*\xa8\xd85\nh\xce\xff\xae<\xbd+\xff\x16u\xdd\xd5d\x8eY=\xd6G(\xf2b \xf7\xe9At\x9e3\r\x9a\x15\xed\xab\xdb\x93\xd1\x0cB\x10.{r\x89\xd2\x9c\xc0\xc9\xae.\xfb\xc7\xc0\xcf\xf9\x17/;\x02~O\xc0'\xe1Tm\xe4\xb6\xaa:\xbb>f\xcc\xcb]\xd6\xc6K\x83\x83\x14\x9c\xb8\xe6\xff\x18-\x94O\xe5{e\xbc\x99\xd0\x05\r
--7a9cbec02ceef655--\r
";

/// RFC 4475 §3.1.1.12 (`unreason`).
const UNREASON: &[u8] = b"SIP/2.0 200 = 2**3 * 5**2 \xd0\xbd\xd0\xbe \xd1\x81\xd1\x82\xd0\xbe \xd0\xb4\xd0\xb5\xd0\xb2\xd1\x8f\xd0\xbd\xd0\xbe\xd1\x81\xd1\x82\xd0\xbe \xd0\xb4\xd0\xb5\xd0\xb2\xd1\x8f\xd1\x82\xd1\x8c - \xd0\xbf\xd1\x80\xd0\xbe\xd1\x81\xd1\x82\xd0\xbe\xd0\xb5\r
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\r
Call-ID: unreason.1234ksdfak3j2erwedfsASdf\r
CSeq: 35 INVITE\r
From: sip:user@example.com;tag=11141343\r
To: sip:user@example.edu;tag=2229\r
Content-Length: 154\r
Content-Type: application/sdp\r
Contact: <sip:user@host198.example.com>\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.198\r
s=-\r
c=IN IP4 192.0.2.198\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.1.13 (`noreason`).
const NOREASON: &[u8] = b"SIP/2.0 100 \r
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\r
Call-ID: noreason.asndj203insdf99223ndf\r
CSeq: 35 INVITE\r
From: <sip:user@example.com>;tag=39ansfi3\r
To: <sip:user@example.edu>;tag=902jndnke3\r
Content-Length: 0\r
Contact: <sip:user@host105.example.com>\r
\r
";

/// RFC 4475 §3.1.2.1 (`badinv01`).
const BADINV01: &[u8] = b"INVITE sip:user@example.com SIP/2.0\r
To: sip:j.user@example.com\r
From: sip:caller@example.net;tag=134161461246\r
Max-Forwards: 7\r
Call-ID: badinv01.0ha0isndaksdjasdf3234nas\r
CSeq: 8 INVITE\r
Via: SIP/2.0/UDP 192.0.2.15;;,;,,\r
Contact: \"Joe\" <sip:joe@example.org>;;;;\r
Content-Length: 152\r
Content-Type: application/sdp\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.15\r
s=-\r
c=IN IP4 192.0.2.15\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.2.2 (`clerr`).
const CLERR: &[u8] = b"INVITE sip:user@example.com SIP/2.0\r
Max-Forwards: 80\r
To: sip:j.user@example.com\r
From: sip:caller@example.net;tag=93942939o2\r
Contact: <sip:caller@hungry.example.net>\r
Call-ID: clerr.0ha0isndaksdjweiafasdk3\r
CSeq: 8 INVITE\r
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523\r
Content-Type: application/sdp\r
Content-Length: 9999\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.155\r
s=-\r
c=IN IP4 192.0.2.155\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.2.3 (`ncl`).
const NCL: &[u8] = b"INVITE sip:user@example.com SIP/2.0\r
Max-Forwards: 254\r
To: sip:j.user@example.com\r
From: sip:caller@example.net;tag=32394234\r
Call-ID: ncl.0ha0isndaksdj2193423r542w35\r
CSeq: 0 INVITE\r
Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw\r
Contact: <sip:caller@example53.example.net>\r
Content-Type: application/sdp\r
Content-Length: -999\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.53\r
s=-\r
c=IN IP4 192.0.2.53\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.2.4 (`scalar02`).
const SCALAR02: &[u8] = b"REGISTER sip:example.com SIP/2.0\r
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3\r
To: <sip:user@example.com>\r
From: <sip:user@example.com>;tag=239232jh3\r
CSeq: 36893488147419103232 REGISTER\r
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32\r
Max-Forwards: 300\r
Expires: 10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\r
Contact: <sip:user@host129.example.com>\r
  ;expires=280297596632815\r
Content-Length: 0\r
\r
";

/// RFC 4475 §3.1.2.5 (`scalarlg`).
const SCALARLG: &[u8] = b"SIP/2.0 503 Service Unavailable\r
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129\r
To: <sip:user@example.com>\r
From: <sip:other@example.net>;tag=2easdjfejw\r
CSeq: 9292394834772304023312 OPTIONS\r
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r\r
Retry-After: 949302838503028349304023988\r
Warning: 1812 overture \"In Progress\"\r
Content-Length: 0\r
\r
";

/// RFC 4475 §3.1.2.6 (`quotbal`).
const QUOTBAL: &[u8] = b"INVITE sip:user@example.com SIP/2.0\r
To: \"Mr. J. User <sip:j.user@example.com>\r
From: sip:caller@example.net;tag=93334\r
Max-Forwards: 10\r
Call-ID: quotbal.aksdj\r
Contact: <sip:caller@host59.example.net>\r
CSeq: 8 INVITE\r
Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234\r
Content-Type: application/sdp\r
Content-Length: 152\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.15\r
s=-\r
c=IN IP4 192.0.2.15\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.2.7 (`ltgtruri`).
const LTGTRURI: &[u8] = b"INVITE <sip:user@example.com> SIP/2.0\r
To: sip:user@example.com\r
From: sip:caller@example.net;tag=39291\r
Max-Forwards: 23\r
Call-ID: ltgtruri.1@192.0.2.5\r
CSeq: 1 INVITE\r
Via: SIP/2.0/UDP 192.0.2.5\r
Contact: <sip:caller@host5.example.net>\r
Content-Type: application/sdp\r
Content-Length: 159\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.5\r
s=-\r
c=IN IP4 192.0.2.5\r
t=3149328700 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.2.8 (`lwsruri`).
const LWSRURI: &[u8] = b"INVITE sip:user@example.com; lr SIP/2.0\r
To: sip:user@example.com;tag=3xfe-9921883-z9f\r
From: sip:caller@example.net;tag=231413434\r
Max-Forwards: 5\r
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423\r
CSeq: 2130706432 INVITE\r
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395\r
Contact: <sip:caller@host1.example.net>\r
Content-Type: application/sdp\r
Content-Length: 159\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.1\r
s=-\r
c=IN IP4 192.0.2.1\r
t=3149328700 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.2.9 (`lwsstart`).
const LWSSTART: &[u8] = b"INVITE  sip:user@example.com  SIP/2.0\r
Max-Forwards: 8\r
To: sip:user@example.com\r
From: sip:caller@example.net;tag=8814\r
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com\r
CSeq: 1893884 INVITE\r
Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923\r
Contact: <sip:caller@host1.example.net>\r
Content-Type: application/sdp\r
Content-Length: 150\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.1\r
s=-\r
c=IN IP4 192.0.2.1\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.2.10 (`trws`).
const TRWS: &[u8] = b"OPTIONS sip:remote-target@example.com SIP/2.0  \r
Via: SIP/2.0/TCP host1.examle.com;branch=z9hG4bK299342093\r
To: <sip:remote-target@example.com>\r
From: <sip:local-resource@example.com>;tag=329429089\r
Call-ID: trws.oicu34958239neffasdhr2345r\r
Accept: application/sdp\r
CSeq: 238923 OPTIONS\r
Max-Forwards: 70\r
Content-Length: 0\r
\r
";

/// RFC 4475 §3.1.2.11 (`escruri`).
const ESCRURI: &[u8] = b"INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0\r
To: sip:user@example.com\r
From: sip:caller@example.net;tag=341518\r
Max-Forwards: 7\r
Contact: <sip:caller@host39923.example.net>\r
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5\r
CSeq: 149209342 INVITE\r
Via: SIP/2.0/UDP host-of-the-hour.example.com;branch=z9hG4bKkdjuw\r
Content-Type: application/sdp\r
Content-Length: 150\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.1\r
s=-\r
c=IN IP4 192.0.2.1\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.2.12 (`baddate`).
const BADDATE: &[u8] = b"INVITE sip:user@example.com SIP/2.0\r
To: sip:user@example.com\r
From: sip:caller@example.net;tag=2234923\r
Max-Forwards: 70\r
Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234\r
CSeq: 1392934 INVITE\r
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\r
Date: Fri, 01 Jan 2010 16:00:00 EST\r
Contact: <sip:caller@host5.example.net>\r
Content-Type: application/sdp\r
Content-Length: 150\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.5\r
s=-\r
c=IN IP4 192.0.2.5\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.2.13 (`regbadct`).
const REGBADCT: &[u8] = b"REGISTER sip:example.com SIP/2.0\r
To: sip:user@example.com\r
From: sip:user@example.com;tag=998332\r
Max-Forwards: 70\r
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1\r
CSeq: 1 REGISTER\r
Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw\r
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E\r
l: 0\r
\r
";

/// RFC 4475 §3.1.2.14 (`badaspec`).
const BADASPEC: &[u8] = b"OPTIONS sip:user@example.org SIP/2.0\r
Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234\r
Max-Forwards: 70\r
From: \"Bell, Alexander\" <sip:a.g.bell@example.com>;tag=433423\r
To: \"Watson, Thomas\" < sip:t.watson@example.org >\r
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3\r
Accept: application/sdp\r
CSeq: 3923239 OPTIONS\r
l: 0\r
\r
";

/// RFC 4475 §3.1.2.15 (`baddn`).
const BADDN: &[u8] = b"OPTIONS sip:t.watson@example.org SIP/2.0\r
Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw\r
Max-Forwards:      70\r
From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43\r
To:      Watson, Thomas <sip:t.watson@example.org>\r
Call-ID: baddn.31415@c.example.com\r
Accept: application/sdp\r
CSeq:    3923239 OPTIONS\r
l: 0\r
";

/// RFC 4475 §3.1.2.16 (`badvers`).
const BADVERS: &[u8] = b"OPTIONS sip:t.watson@example.org SIP/7.0\r
Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\r
Max-Forwards:     70\r
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe\r
To:      T. Watson <sip:t.watson@example.org>\r
Call-ID: badvers.31417@c.example.com\r
CSeq:    1 OPTIONS\r
l: 0\r
\r
";

/// RFC 4475 §3.1.2.17 (`mismatch01`).
const MISMATCH01: &[u8] = b"OPTIONS sip:user@example.com SIP/2.0\r
To: sip:j.user@example.com\r
From: sip:caller@example.net;tag=34525\r
Max-Forwards: 6\r
Call-ID: mismatch01.dj0234sxdfl3\r
CSeq: 8 INVITE\r
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\r
l: 0\r
\r
";

/// RFC 4475 §3.1.2.18 (`mismatch02`).
const MISMATCH02: &[u8] = b"NEWMETHOD sip:user@example.com SIP/2.0\r
To: sip:j.user@example.com\r
From: sip:caller@example.net;tag=34525\r
Max-Forwards: 6\r
Call-ID: mismatch02.dj0234sxdfl3\r
CSeq: 8 INVITE\r
Contact: <sip:caller@host.example.net>\r
Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw\r
Content-Type: application/sdp\r
l: 138\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.1\r
c=IN IP4 192.0.2.1\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.1.2.19 (`bigcode`).
const BIGCODE: &[u8] = b"SIP/2.0 4294967301 better not break the receiver\r
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\r
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i\r
CSeq: 353494 INVITE\r
From: <sip:user@example.com>;tag=39ansfi3\r
To: <sip:user@example.edu>;tag=902jndnke3\r
Content-Length: 0\r
Contact: <sip:user@host105.example.com>\r
\r
";

/// RFC 4475 §3.2.1 (`badbranch`).
const BADBRANCH: &[u8] = b"OPTIONS sip:user@example.com SIP/2.0\r
To: sip:user@example.com\r
From: sip:caller@example.org;tag=33242\r
Max-Forwards: 3\r
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK\r
Accept: application/sdp\r
Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n\r
CSeq: 8 OPTIONS\r
l: 0\r
\r
";

/// RFC 4475 §3.3.1 (`insuf`).
const INSUF: &[u8] = b"INVITE sip:user@example.com SIP/2.0\r
CSeq: 193942 INVITE\r
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf\r
Content-Type: application/sdp\r
l: 152\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.95\r
s=-\r
c=IN IP4 192.0.2.95\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.3.2 (`unkscm`).
const UNKSCM: &[u8] = b"OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0\r
To: sip:user@example.com\r
From: sip:caller@example.net;tag=384\r
Max-Forwards: 3\r
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34\r
CSeq: 3923423 OPTIONS\r
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234\r
Content-Length: 0\r
\r
";

/// RFC 4475 §3.3.3 (`novelsc`).
const NOVELSC: &[u8] = b"OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0\r
To: sip:user@example.com\r
From: sip:caller@example.net;tag=384\r
Max-Forwards: 3\r
Call-ID: novelsc.asdfasser0q239nwsdfasdkl34\r
CSeq: 3923423 OPTIONS\r
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234\r
Content-Length: 0\r
\r
";

/// RFC 4475 §3.3.4 (`unksm2`).
const UNKSM2: &[u8] = b"REGISTER sip:example.com SIP/2.0\r
To: isbn:2983792873\r
From: <http://www.example.com>;tag=3234233\r
Call-ID: unksm2.daksdj@hyphenated-host.example.com\r
CSeq: 234902 REGISTER\r
Max-Forwards: 70\r
Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw\r
Contact: <name:John_Smith>\r
l: 0\r
\r
";

/// RFC 4475 §3.3.5 (`bext01`).
const BEXT01: &[u8] = b"OPTIONS sip:user@example.com SIP/2.0\r
To: sip:j_user@example.com\r
From: sip:caller@example.net;tag=242etr\r
Max-Forwards: 6\r
Call-ID: bext01.0ha0isndaksdj\r
Require: nothingSupportsThis, nothingSupportsThisEither\r
Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis\r
CSeq: 8 OPTIONS\r
Via: SIP/2.0/TLS fold-and-staple.example.com;branch=z9hG4bKkdjuw\r
Content-Length: 0\r
\r
";

/// RFC 4475 §3.3.6 (`invut`).
const INVUT: &[u8] = b"INVITE sip:user@example.com SIP/2.0\r
Contact: <sip:caller@host5.example.net>\r
To: sip:j.user@example.com\r
From: sip:caller@example.net;tag=8392034\r
Max-Forwards: 70\r
Call-ID: invut.0ha0isndaksdjadsfij34n23d\r
CSeq: 235448 INVITE\r
Via: SIP/2.0/UDP somehost.example.com;branch=z9hG4bKkdjuw\r
Content-Type: application/unknownformat\r
Content-Length: 40\r
\r
<audio>\r
 <pcmu port=\"443\"/>\r
</audio>\r
";

/// RFC 4475 §3.3.7 (`regaut01`).
const REGAUT01: &[u8] = b"REGISTER sip:example.com SIP/2.0\r
To: sip:j.user@example.com\r
From: sip:j.user@example.com;tag=87321hj23128\r
Max-Forwards: 8\r
Call-ID: regaut01.0ha0isndaksdj\r
CSeq: 9338 REGISTER\r
Via: SIP/2.0/TCP 192.0.2.253;branch=z9hG4bKkdjuw\r
Authorization: NoOneKnowsThisScheme opaque-data=here\r
Content-Length:0\r
\r
";

/// RFC 4475 §3.3.8 (`multi01`).
const MULTI01: &[u8] = b"INVITE sip:user@company.com SIP/2.0\r
Contact: <sip:caller@host25.example.net>\r
Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw\r
Max-Forwards: 70\r
CSeq: 5 INVITE\r
Call-ID: multi01.98asdh@192.0.2.1\r
CSeq: 59 INVITE\r
Call-ID: multi01.98asdh@192.0.2.2\r
From: sip:caller@example.com;tag=3413415\r
To: sip:user@example.com\r
To: sip:other@example.net\r
From: sip:caller@example.net;tag=2923420123\r
Content-Type: application/sdp\r
l: 154\r
Contact: <sip:caller@host36.example.net>\r
Max-Forwards: 5\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.25\r
s=-\r
c=IN IP4 192.0.2.25\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
\r
";

/// RFC 4475 §3.3.9 (`mcl01`).
const MCL01: &[u8] = b"OPTIONS sip:user@example.com SIP/2.0\r
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423\r
To: sip:user@example.com\r
From: sip:other@example.net;tag=3923942\r
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf\r
CSeq: 15932 OPTIONS\r
Content-Length: 13\r
Max-Forwards: 60\r
Content-Length: 5\r
Content-Type: text/plain\r
\r
There's no way to know how many octets are supposed to be here.\r
\r
";

/// RFC 4475 §3.3.10 (`bcast`).
const BCAST: &[u8] = b"SIP/2.0 200 OK\r
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\r
Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23\r
Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf\r
CSeq: 35 INVITE\r
From: sip:user@example.com;tag=11141343\r
To: sip:user@example.edu;tag=2229\r
Content-Length: 154\r
Content-Type: application/sdp\r
Contact: <sip:user@host28.example.com>\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.198\r
s=-\r
c=IN IP4 192.0.2.198\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.3.11 (`zeromf`).
const ZEROMF: &[u8] = b"OPTIONS sip:user@example.com SIP/2.0\r
To: sip:user@example.com\r
From: sip:caller@example.net;tag=3ghsd41\r
Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas\r
CSeq: 39234321 OPTIONS\r
Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw2349i\r
Max-Forwards: 0\r
Content-Length: 0\r
\r
";

/// RFC 4475 §3.3.12 (`cparam01`).
const CPARAM01: &[u8] = b"REGISTER sip:example.com SIP/2.0\r
Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw\r
Max-Forwards: 70\r
From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe\r
To: sip:watson@example.com\r
Call-ID: cparam01.70710@saturn.example.com\r
CSeq: 2 REGISTER\r
Contact: sip:+19725552222@gw1.example.net;unknownparam\r
l: 0\r
\r
";

/// RFC 4475 §3.3.13 (`cparam02`).
const CPARAM02: &[u8] = b"REGISTER sip:example.com SIP/2.0\r
Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw\r
Max-Forwards: 70\r
From: sip:watson@example.com;tag=838293\r
To: sip:watson@example.com\r
Call-ID: cparam02.70710@saturn.example.com\r
CSeq: 3 REGISTER\r
Contact: <sip:+19725552222@gw1.example.net;unknownparam>\r
l: 0\r
\r
";

/// RFC 4475 §3.3.14 (`regescrt`).
const REGESCRT: &[u8] = b"REGISTER sip:example.com SIP/2.0\r
To: sip:user@example.com\r
From: sip:user@example.com;tag=8\r
Max-Forwards: 70\r
Call-ID: regescrt.k345asrl3fdbv@192.0.2.1\r
CSeq: 14398234 REGISTER\r
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw\r
M: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>\r
L:0\r
\r
";

/// RFC 4475 §3.3.15 (`sdp01`).
const SDP01: &[u8] = b"INVITE sip:user@example.com SIP/2.0\r
To: sip:j_user@example.com\r
Contact: <sip:caller@host15.example.net>\r
From: sip:caller@example.net;tag=234\r
Max-Forwards: 5\r
Call-ID: sdp01.ndaksdj9342dasdd\r
Accept: text/nobodyKnowsThis\r
CSeq: 8 INVITE\r
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw\r
Content-Length: 150\r
Content-Type: application/sdp\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.5\r
s=-\r
c=IN IP4 192.0.2.5\r
t=0 0\r
m=audio 49217 RTP/AVP 0 12\r
m=video 3227 RTP/AVP 31\r
a=rtpmap:31 LPC\r
";

/// RFC 4475 §3.4.1 (`inv2543`).
const INV2543: &[u8] = b"INVITE sip:UserB@example.com SIP/2.0\r
Via: SIP/2.0/UDP iftgw.example.com\r
From: <sip:+13035551111@ift.client.example.net;user=phone>\r
Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>\r
To: sip:+16505552222@ss1.example.net;user=phone\r
Call-ID: inv2543.1717@ift.client.example.com\r
CSeq: 56 INVITE\r
Content-Type: application/sdp\r
\r
v=0\r
o=mhandley 29739 7272939 IN IP4 192.0.2.5\r
s=-\r
c=IN IP4 192.0.2.5\r
t=0 0\r
m=audio 49217 RTP/AVP 0\r
";

/// What the endpoint must do with an RFC 4475 message.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Exactly one response with this status, whose text contains the second field (the
    /// reason phrase naming the fault, or a header the answer must carry).
    Answer(u16, &'static str),
    /// Parsed and handed to the endpoint, which sends nothing (a response nobody asked for).
    Absorbed,
    /// Refused by validation without an answer.
    Dropped,
}

use Behaviour::{Absorbed, Answer, Dropped};

/// Every message of RFC 4475 §3: name, section, whether the RFC calls it valid, the bytes, and
/// what a user agent must do with it (the RFC's text for each message says which).
const RFC4475: &[(&str, &str, bool, &[u8], Behaviour)] = &[
    // Its To carries a tag no dialog of ours has: 481 (RFC 3261 §12.2.2).
    (
        "wsinv",
        "3.1.1.1",
        true,
        WSINV,
        Answer(481, "Via: SIP/2.0/UDP 192.0.2.2;branch=390skdjuw\r\n"),
    ),
    (
        "intmeth",
        "3.1.1.2",
        true,
        INTMETH,
        Answer(501, "Allow: INVITE, ACK"),
    ),
    (
        "esc01",
        "3.1.1.3",
        true,
        ESC01,
        Answer(480, "To: sip:%75se%72@example.com;tag="),
    ),
    (
        "escnull",
        "3.1.1.4",
        true,
        ESCNULL,
        Answer(405, "Allow: INVITE, ACK"),
    ),
    (
        "esc02",
        "3.1.1.5",
        true,
        ESC02,
        Answer(501, "Allow: INVITE, ACK"),
    ),
    (
        "lwsdisp",
        "3.1.1.6",
        true,
        LWSDISP,
        Answer(200, "Allow: INVITE, ACK"),
    ),
    (
        "longreq",
        "3.1.1.7",
        true,
        LONGREQ,
        Answer(480, "Via: SIP/2.0/TCP sip1.example.com\r\n"),
    ),
    (
        "dblreq",
        "3.1.1.8",
        true,
        DBLREQ,
        Answer(405, "CSeq: 8 REGISTER"),
    ),
    (
        "semiuri",
        "3.1.1.9",
        true,
        SEMIURI,
        Answer(200, "Allow: INVITE, ACK"),
    ),
    (
        "transports",
        "3.1.1.10",
        true,
        TRANSPORTS,
        Answer(200, "Via: SIP/2.0/UNKNOWN t4.example.com"),
    ),
    (
        "mpart01",
        "3.1.1.11",
        true,
        MPART01,
        Answer(405, "CSeq: 1 MESSAGE"),
    ),
    ("unreason", "3.1.1.12", true, UNREASON, Absorbed),
    ("noreason", "3.1.1.13", true, NOREASON, Absorbed),
    (
        "badinv01",
        "3.1.2.1",
        false,
        BADINV01,
        Answer(400, "Bad Request - Malformed Via header"),
    ),
    (
        "clerr",
        "3.1.2.2",
        false,
        CLERR,
        Answer(400, "Bad Request - Content-Length exceeds body"),
    ),
    (
        "ncl",
        "3.1.2.3",
        false,
        NCL,
        Answer(400, "Bad Request - Invalid Content-Length"),
    ),
    (
        "scalar02",
        "3.1.2.4",
        false,
        SCALAR02,
        Answer(400, "Bad Request - Malformed CSeq header"),
    ),
    ("scalarlg", "3.1.2.5", false, SCALARLG, Dropped),
    (
        "quotbal",
        "3.1.2.6",
        false,
        QUOTBAL,
        Answer(400, "Bad Request - Malformed To header"),
    ),
    (
        "ltgtruri",
        "3.1.2.7",
        false,
        LTGTRURI,
        Answer(400, "Bad Request - Malformed Request-URI"),
    ),
    (
        "lwsruri",
        "3.1.2.8",
        false,
        LWSRURI,
        Answer(400, "Bad Request - Malformed Request-Line"),
    ),
    (
        "lwsstart",
        "3.1.2.9",
        false,
        LWSSTART,
        Answer(400, "Bad Request - Malformed Request-Line"),
    ),
    (
        "trws",
        "3.1.2.10",
        false,
        TRWS,
        Answer(400, "Bad Request - Malformed Request-Line"),
    ),
    (
        "escruri",
        "3.1.2.11",
        false,
        ESCRURI,
        Answer(400, "Bad Request - Malformed Request-URI"),
    ),
    // The Date is of no use to us, so its bad zone is ignored, as the RFC allows.
    (
        "baddate",
        "3.1.2.12",
        false,
        BADDATE,
        Answer(480, "CSeq: 1392934 INVITE"),
    ),
    (
        "regbadct",
        "3.1.2.13",
        false,
        REGBADCT,
        Answer(400, "Bad Request - Malformed Contact header"),
    ),
    (
        "badaspec",
        "3.1.2.14",
        false,
        BADASPEC,
        Answer(400, "Bad Request - Malformed To header"),
    ),
    (
        "baddn",
        "3.1.2.15",
        false,
        BADDN,
        Answer(400, "Bad Request - Malformed From header"),
    ),
    (
        "badvers",
        "3.1.2.16",
        false,
        BADVERS,
        Answer(505, "SIP/2.0 505 Version Not Supported"),
    ),
    (
        "mismatch01",
        "3.1.2.17",
        false,
        MISMATCH01,
        Answer(
            400,
            "Bad Request - CSeq method does not match request method",
        ),
    ),
    (
        "mismatch02",
        "3.1.2.18",
        false,
        MISMATCH02,
        Answer(501, "Allow: INVITE, ACK"),
    ),
    ("bigcode", "3.1.2.19", false, BIGCODE, Dropped),
    (
        "badbranch",
        "3.2.1",
        false,
        BADBRANCH,
        Answer(400, "Bad Request - Via branch lacks a transaction id"),
    ),
    (
        "insuf",
        "3.3.1",
        false,
        INSUF,
        Answer(
            400,
            "Bad Request - Missing From, To, Call-ID, Max-Forwards headers",
        ),
    ),
    (
        "unkscm",
        "3.3.2",
        true,
        UNKSCM,
        Answer(416, "SIP/2.0 416 Unsupported URI Scheme"),
    ),
    (
        "novelsc",
        "3.3.3",
        true,
        NOVELSC,
        Answer(416, "SIP/2.0 416 Unsupported URI Scheme"),
    ),
    (
        "unksm2",
        "3.3.4",
        true,
        UNKSM2,
        Answer(405, "To: isbn:2983792873;tag="),
    ),
    (
        "bext01",
        "3.3.5",
        true,
        BEXT01,
        Answer(
            420,
            "Unsupported: nothingSupportsThis, nothingSupportsThisEither\r\n",
        ),
    ),
    (
        "invut",
        "3.3.6",
        true,
        INVUT,
        Answer(415, "Accept: application/sdp\r\n"),
    ),
    (
        "regaut01",
        "3.3.7",
        true,
        REGAUT01,
        Answer(405, "Allow: INVITE, ACK"),
    ),
    (
        "multi01",
        "3.3.8",
        false,
        MULTI01,
        Answer(400, "Bad Request - Multiple From headers"),
    ),
    (
        "mcl01",
        "3.3.9",
        false,
        MCL01,
        Answer(400, "Bad Request - Conflicting Content-Length"),
    ),
    ("bcast", "3.3.10", true, BCAST, Absorbed),
    // An endpoint treats Max-Forwards 0 as if it were positive; only proxies answer 483.
    (
        "zeromf",
        "3.3.11",
        true,
        ZEROMF,
        Answer(200, "Allow: INVITE, ACK"),
    ),
    (
        "cparam01",
        "3.3.12",
        true,
        CPARAM01,
        Answer(405, "Allow: INVITE, ACK"),
    ),
    (
        "cparam02",
        "3.3.13",
        true,
        CPARAM02,
        Answer(405, "Allow: INVITE, ACK"),
    ),
    (
        "regescrt",
        "3.3.14",
        true,
        REGESCRT,
        Answer(405, "Allow: INVITE, ACK"),
    ),
    (
        "sdp01",
        "3.3.15",
        true,
        SDP01,
        Answer(406, "SIP/2.0 406 Not Acceptable"),
    ),
    (
        "inv2543",
        "3.4.1",
        true,
        INV2543,
        Answer(480, "Via: SIP/2.0/UDP iftgw.example.com\r\n"),
    ),
];

/// Feeds one datagram to a fresh endpoint and returns what it sends back.
fn answers_to(message: &[u8]) -> Vec<String> {
    let mut endpoint = Endpoint::new(EndpointConfig::new("192.0.2.10", 5060), 4475);
    let source: SocketAddr = "192.0.2.99:5060".parse().unwrap();
    endpoint.handle_message(Instant::now(), source, Transport::Udp, message);
    std::iter::from_fn(|| endpoint.poll_transmit())
        .map(|t| String::from_utf8(t.payload).unwrap())
        .collect()
}

/// Why a message did not get its behaviour, or `None` when it did.
fn check(valid: bool, message: &[u8], behaviour: Behaviour) -> Option<String> {
    let verdict = validate(message, "tag");
    let sent = answers_to(message);
    match behaviour {
        Answer(code, needle) => {
            if valid
                && matches!(
                    &verdict,
                    Inbound::Reject {
                        reason: RejectReason::BadRequest,
                        ..
                    }
                )
            {
                return Some(format!(
                    "a valid message was refused as malformed: {verdict:?}"
                ));
            }
            match sent.as_slice() {
                [one] if one.starts_with(&format!("SIP/2.0 {code} ")) && one.contains(needle) => {
                    None
                }
                _ => Some(format!(
                    "expected one {code} containing {needle:?}, sent {sent:?}"
                )),
            }
        }
        Absorbed => match (&verdict, sent.is_empty()) {
            (Inbound::Request(_) | Inbound::Response(_), true) => None,
            _ => Some(format!(
                "expected parsed and nothing sent, got {verdict:?}, sent {sent:?}"
            )),
        },
        Dropped => match (&verdict, sent.is_empty()) {
            (Inbound::Drop(_), true) => None,
            _ => Some(format!("expected a drop, got {verdict:?}, sent {sent:?}")),
        },
    }
}

#[test]
fn every_rfc4475_message_gets_the_rfcs_behaviour() {
    let failures: Vec<String> = RFC4475
        .iter()
        .filter_map(|(name, section, valid, message, behaviour)| {
            check(*valid, message, *behaviour).map(|why| format!("{section} {name}: {why}"))
        })
        .collect();
    println!(
        "RFC 4475 coverage: {}/{} messages get the RFC's behaviour",
        RFC4475.len() - failures.len(),
        RFC4475.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_table_holds_every_message_of_section_3_once() {
    assert_eq!(RFC4475.len(), 49);
    let mut names: Vec<&str> = RFC4475.iter().map(|c| c.0).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 49);
}

/// What a message must get.
#[derive(Debug)]
enum Expect {
    /// Parsed and passed on.
    Accept,
    /// Refused with this status and this exact reason phrase.
    Refuse(u16, &'static str),
    /// Dropped (cannot be answered).
    Drop,
}

fn req(start: &str, headers: &str, body: &str) -> String {
    format!(
        "{start}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const VIA: &str = "Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK74bf9\r\n";
const REST: &str = "Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=9fxced76sl\r\nTo: <sip:bob@example.com>\r\nCall-ID: 3848276298220188511@example.com\r\nCSeq: 1 OPTIONS\r\n";

fn cases() -> Vec<(&'static str, String, Expect)> {
    let good = req(
        "OPTIONS sip:bob@example.com SIP/2.0",
        &format!("{VIA}{REST}"),
        "",
    );
    vec![
        ("plain valid OPTIONS", good.clone(), Expect::Accept),
        (
            "header line folding and tabs (4475 3.1.1.1 kind)",
            req(
                "OPTIONS sip:bob@example.com SIP/2.0",
                &format!("{VIA}{REST}Subject: first line\r\n  continued\r\n\tand more\r\nX-Tabbed :\t value \r\n"),
                "",
            ),
            Expect::Accept,
        ),
        (
            "compact header names",
            "OPTIONS sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKc1\r\nMax-Forwards: 70\r\nf: <sip:alice@example.com>;tag=1\r\nt: sip:bob@example.com\r\ni: compact-1\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n".to_owned(),
            Expect::Accept,
        ),
        (
            "lower-case header names and extra whitespace around colons",
            req(
                "OPTIONS sip:bob@example.com SIP/2.0",
                "via  :  SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKws\r\nmax-forwards:70\r\nfrom:<sip:a@example.com>;tag=1\r\nto:   <sip:bob@example.com>\r\ncall-id:ws-1\r\ncseq:  1 OPTIONS\r\n",
                "",
            ),
            Expect::Accept,
        ),
        (
            "leading CRLFs before the start line",
            format!("\r\n\r\n{good}"),
            Expect::Accept,
        ),
        (
            "a very long header value (8 KiB)",
            req(
                "OPTIONS sip:bob@example.com SIP/2.0",
                &format!("{VIA}{REST}X-Long: {}\r\n", "a".repeat(8192)),
                "",
            ),
            Expect::Accept,
        ),
        (
            "many Via headers",
            req(
                "OPTIONS sip:bob@example.com SIP/2.0",
                &format!(
                    "{VIA}{}{REST}",
                    (0..40)
                        .map(|i| format!("Via: SIP/2.0/UDP 10.0.0.{i};branch=z9hG4bKv{i}\r\n"))
                        .collect::<String>()
                ),
                "",
            ),
            Expect::Accept,
        ),
        (
            "body with a multipart content type",
            req(
                "INFO sip:bob@example.com SIP/2.0",
                &format!("{VIA}{}Content-Type: multipart/mixed;boundary=unique\r\n", REST.replace("1 OPTIONS", "1 INFO")),
                "--unique\r\nContent-Type: text/plain\r\n\r\nhello\r\n--unique--\r\n",
            ),
            Expect::Accept,
        ),
        (
            "IPv6 references in the Request-URI, Via and Contact (RFC 5118 kind)",
            req(
                "OPTIONS sip:[2001:db8::10]:5070 SIP/2.0",
                &format!("Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111;rport\r\n{REST}Contact: \"Caller\" <sip:caller@[2001:db8::9:1]:5060;transport=udp>\r\n"),
                "",
            ),
            Expect::Accept,
        ),
        (
            "an IPv6 address without brackets is no host (RFC 5118 kind)",
            req("OPTIONS sip:2001:db8::10 SIP/2.0", &format!("{VIA}{REST}"), ""),
            Expect::Refuse(400, "Bad Request - Malformed Request-URI"),
        ),
        (
            "tel: Request-URI and To (RFC 3966)",
            req(
                "OPTIONS tel:+1-201-555-0123 SIP/2.0",
                &format!("{VIA}{}", REST.replace("To: <sip:bob@example.com>", "To: <tel:+1-201-555-0123>")),
                "",
            ),
            Expect::Accept,
        ),
        (
            "a local tel: number without phone-context",
            req("OPTIONS tel:7042 SIP/2.0", &format!("{VIA}{REST}"), ""),
            Expect::Refuse(400, "Bad Request - Malformed Request-URI"),
        ),
        (
            "Max-Forwards above 255",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("Max-Forwards: 70", "Max-Forwards: 256")), ""),
            Expect::Refuse(400, "Bad Request - Malformed Max-Forwards header"),
        ),
        (
            "Route that is not a name-addr",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{REST}Route: sip:proxy.example.com;lr\r\n"), ""),
            Expect::Refuse(400, "Bad Request - Malformed Route header"),
        ),
        (
            "Call-ID with whitespace",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("Call-ID: 3848276298220188511@example.com", "Call-ID: two words")), ""),
            Expect::Refuse(400, "Bad Request - Malformed Call-ID header"),
        ),
        (
            "missing Call-ID",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("Call-ID: 3848276298220188511@example.com\r\n", "")), ""),
            Expect::Refuse(400, "Bad Request - Missing Call-ID header"),
        ),
        (
            "missing Max-Forwards",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("Max-Forwards: 70\r\n", "")), ""),
            Expect::Refuse(400, "Bad Request - Missing Max-Forwards header"),
        ),
        (
            "CSeq method differs from the request method",
            req("INVITE sip:bob@example.com SIP/2.0", &format!("{VIA}{REST}"), ""),
            Expect::Refuse(400, "Bad Request - CSeq method does not match request method"),
        ),
        (
            "CSeq number out of range (4475 3.1.2.9 kind)",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("CSeq: 1 OPTIONS", "CSeq: 36893488147419103232 OPTIONS")), ""),
            Expect::Refuse(400, "Bad Request - Malformed CSeq header"),
        ),
        (
            "negative Max-Forwards",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("Max-Forwards: 70", "Max-Forwards: -1")), ""),
            Expect::Refuse(400, "Bad Request - Malformed Max-Forwards header"),
        ),
        (
            "two From headers",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{REST}From: <sip:eve@example.com>;tag=2\r\n"), ""),
            Expect::Refuse(400, "Bad Request - Multiple From headers"),
        ),
        (
            "Content-Length larger than the datagram (4475 3.1.2.7 kind)",
            format!("OPTIONS sip:bob@example.com SIP/2.0\r\n{VIA}{REST}Content-Length: 9999\r\n\r\nshort"),
            Expect::Refuse(400, "Bad Request - Content-Length exceeds body"),
        ),
        (
            "non-numeric Content-Length",
            format!("OPTIONS sip:bob@example.com SIP/2.0\r\n{VIA}{REST}Content-Length: ten\r\n\r\n"),
            Expect::Refuse(400, "Bad Request - Invalid Content-Length"),
        ),
        (
            "two bodies' worth of Content-Length headers disagreeing",
            format!("OPTIONS sip:bob@example.com SIP/2.0\r\n{VIA}{REST}Content-Length: 2\r\nl: 3\r\n\r\nabc"),
            Expect::Refuse(400, "Bad Request - Conflicting Content-Length"),
        ),
        (
            "header line without a colon",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{REST}NoColonHere\r\n"), ""),
            Expect::Refuse(400, "Bad Request - Malformed header line"),
        ),
        (
            "unknown SIP version (4475 3.1.2.16 kind)",
            req("OPTIONS sip:bob@example.com SIP/7.0", &format!("{VIA}{REST}"), ""),
            Expect::Refuse(505, "Version Not Supported"),
        ),
        (
            "unknown URI scheme (4475 3.3.5 kind)",
            req("OPTIONS nobodyknowsthisscheme:totallyopaquecontent SIP/2.0", &format!("{VIA}{REST}"), ""),
            Expect::Refuse(416, "Unsupported URI Scheme"),
        ),
        (
            "extension method (4475 3.3.2 kind)",
            req("NEWMETHOD sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("1 OPTIONS", "1 NEWMETHOD")), ""),
            Expect::Refuse(501, "Not Implemented"),
        ),
        (
            "lower-case method is a different (unknown) method",
            req("options sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("1 OPTIONS", "1 options")), ""),
            Expect::Refuse(501, "Not Implemented"),
        ),
        (
            "Require with an unknown option tag (4475 3.3.7 kind)",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{REST}Require: nothingSupportsThis, nothingSupportsThisEither\r\n"), ""),
            Expect::Refuse(420, "Bad Extension"),
        ),
        (
            "Max-Forwards exhausted on INFO: a user agent takes it (4475 3.3.11)",
            req("INFO sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("Max-Forwards: 70", "Max-Forwards: 0").replace("1 OPTIONS", "1 INFO")), ""),
            Expect::Accept,
        ),
        (
            "malformed From name-addr",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("From: <sip:alice@example.com>;tag=9fxced76sl", "From: <sip:alice@example.com;tag=9fxced76sl")), ""),
            Expect::Refuse(400, "Bad Request - Malformed From header"),
        ),
        (
            "no Via: nowhere to answer",
            req("OPTIONS sip:bob@example.com SIP/2.0", REST, ""),
            Expect::Drop,
        ),
        (
            "unreadable Via",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("Via: not a via\r\n{REST}"), ""),
            Expect::Drop,
        ),
        (
            "ACK that is malformed is never answered",
            req("ACK sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("1 OPTIONS", "1 INVITE")), ""),
            Expect::Drop,
        ),
        ("empty datagram", String::new(), Expect::Drop),
        ("only CRLFs (a keep-alive)", "\r\n\r\n".to_owned(), Expect::Drop),
        (
            "a datagram ending after a header line without the blank line (4475 3.1.2.15 has one)",
            format!("OPTIONS sip:bob@example.com SIP/2.0\r\n{VIA}"),
            Expect::Refuse(400, "Bad Request - Missing From, To, Call-ID, CSeq, Max-Forwards headers"),
        ),
        ("a datagram ending inside a header line", format!("OPTIONS sip:bob@example.com SIP/2.0\r\n{VIA}Max-Forwards: 7"), Expect::Drop),
        ("start line with one token", "GARBAGE\r\n\r\n".to_owned(), Expect::Drop),
        ("binary noise", String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x13, 0x37]).into_owned(), Expect::Drop),
        (
            "response without a CSeq",
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n".to_owned(),
            Expect::Drop,
        ),
        (
            "response with an out-of-range status",
            "SIP/2.0 999 Weird\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n".to_owned(),
            Expect::Drop,
        ),
    ]
}

#[test]
fn every_tricky_message_gets_its_answer() {
    let mut failures = Vec::new();
    for (name, message, expect) in cases() {
        let got = validate(message.as_bytes(), "tag");
        let ok = match (&expect, &got) {
            (Expect::Accept, Inbound::Request(_) | Inbound::Response(_)) => true,
            (Expect::Refuse(code, reason), Inbound::Reject { response, .. }) => {
                let text = response.to_string();
                text.starts_with(&format!("SIP/2.0 {code} {reason}\r\n"))
            }
            (Expect::Drop, Inbound::Drop(_)) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn folded_values_reach_rsip_unfolded() {
    let message = req(
        "OPTIONS sip:bob@example.com SIP/2.0",
        &format!("{VIA}{REST}Subject: first line\r\n  continued\r\n"),
        "",
    );
    let Inbound::Request(r) = validate(message.as_bytes(), "t") else {
        panic!("not accepted");
    };
    assert!(r.to_string().contains("Subject: first line continued\r\n"));
}

#[test]
fn refusals_say_which_rule_failed() {
    let message = req(
        "OPTIONS sip:bob@example.com SIP/2.0",
        &format!("{VIA}{REST}Require: foo\r\n"),
        "",
    );
    let Inbound::Reject { response, reason } = validate(message.as_bytes(), "t") else {
        panic!("not refused");
    };
    assert_eq!(reason, RejectReason::BadExtension);
    assert!(response.to_string().contains("Unsupported: foo\r\n"));
    assert!(matches!(
        validate(b"", "t"),
        Inbound::Drop(DropReason::Unreadable(_))
    ));
}
