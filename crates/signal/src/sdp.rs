//! The one thing signaling reads in an SDP: whether it offers to *send* media, for
//! access tokens with `canPublish: false`.
//!
//! A description sends media when some audio or video (any non-`application`) media
//! section is active and its direction is `sendrecv` or `sendonly`:
//! * active: the port on its `m=` line is not 0, or it carries `a=bundle-only` (RFC 8843
//!   §6: a bundled section may have port 0 and still be in use);
//! * direction: its own `a=sendrecv` / `a=sendonly` / `a=recvonly` / `a=inactive`, else
//!   the session-level one, else `sendrecv` (the default of RFC 8866 §6.7).
//!
//! `m=application` (data channels) never counts. A malformed port counts as active,
//! so that unreadable input is refused rather than let through.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

fn direction(line: &str) -> Option<Direction> {
    match line {
        "a=sendrecv" => Some(Direction::SendRecv),
        "a=sendonly" => Some(Direction::SendOnly),
        "a=recvonly" => Some(Direction::RecvOnly),
        "a=inactive" => Some(Direction::Inactive),
        _ => None,
    }
}

#[derive(Debug)]
struct Section {
    media: bool,
    active: bool,
    direction: Option<Direction>,
    bundle_only: bool,
}

impl Section {
    fn from_m_line(line: &str) -> Section {
        let mut fields = line.get(2..).unwrap_or_default().split_ascii_whitespace();
        let kind = fields.next().unwrap_or_default();
        // "port" or "port/count" (RFC 8866 §5.14).
        let port = fields.next().unwrap_or_default();
        let port = port.split('/').next().unwrap_or_default();
        Section {
            media: kind != "application",
            active: port.parse::<u16>() != Ok(0),
            direction: None,
            bundle_only: false,
        }
    }

    fn sends(&self, session: Option<Direction>) -> bool {
        let dir = self.direction.or(session).unwrap_or(Direction::SendRecv);
        self.media
            && (self.active || self.bundle_only)
            && matches!(dir, Direction::SendRecv | Direction::SendOnly)
    }
}

/// Whether `sdp` (an offer or an answer) would send audio or video.
pub fn sends_media(sdp: &str) -> bool {
    let mut session: Option<Direction> = None;
    let mut current: Option<Section> = None;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r').trim();
        if line.starts_with("m=") {
            if let Some(s) = current.take() {
                if s.sends(session) {
                    return true;
                }
            }
            current = Some(Section::from_m_line(line));
            continue;
        }
        match current.as_mut() {
            None => {
                if let Some(d) = direction(line) {
                    session = Some(d);
                }
            }
            Some(s) => {
                if let Some(d) = direction(line) {
                    s.direction = Some(d);
                } else if line == "a=bundle-only" {
                    s.bundle_only = true;
                }
            }
        }
    }
    current.is_some_and(|s| s.sends(session))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_SENDRECV: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendrecv\r\n";

    #[test]
    fn directions() {
        assert!(sends_media(CHROME_SENDRECV));
        assert!(!sends_media(
            &CHROME_SENDRECV.replace("sendrecv", "recvonly")
        ));
        assert!(!sends_media(
            &CHROME_SENDRECV.replace("sendrecv", "inactive")
        ));
        assert!(sends_media(
            &CHROME_SENDRECV.replace("sendrecv", "sendonly")
        ));
        // Only the video section sends.
        let one = CHROME_SENDRECV.replacen("a=sendrecv", "a=recvonly", 1);
        assert!(sends_media(&one));
    }

    #[test]
    fn ports_and_bundle_only() {
        let rejected = CHROME_SENDRECV
            .replace("m=audio 9", "m=audio 0")
            .replace("m=video 9", "m=video 0");
        assert!(!sends_media(&rejected));
        let bundled = rejected.replace("a=mid:1\r\n", "a=mid:1\r\na=bundle-only\r\n");
        assert!(sends_media(&bundled));
        assert!(sends_media("m=audio 9/2 RTP/AVP 0\r\na=sendonly\r\n"));
        assert!(sends_media("m=audio x RTP/AVP 0\r\na=sendonly\r\n"));
        assert!(sends_media("m=audio\r\n"));
    }

    #[test]
    fn defaults_and_session_level() {
        // No direction anywhere: sendrecv.
        assert!(sends_media("v=0\r\nm=audio 9 RTP/AVP 0\r\n"));
        // Session-level recvonly applies to sections without their own.
        assert!(!sends_media("v=0\r\na=recvonly\r\nm=audio 9 RTP/AVP 0\r\n"));
        assert!(sends_media(
            "v=0\r\na=recvonly\r\nm=audio 9 RTP/AVP 0\r\na=sendrecv\r\n"
        ));
    }

    #[test]
    fn data_channels_and_empty() {
        assert!(!sends_media(
            "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sendrecv\r\n"
        ));
        assert!(!sends_media(""));
        assert!(!sends_media("v=0\r\n"));
        // A garbled m= line counts as sending: refuse what cannot be read.
        assert!(sends_media("\n\n\r\r m= \u{0}"));
        // LF-only line ends.
        assert!(sends_media("v=0\nm=video 9 RTP/AVP 96\na=sendonly\n"));
    }
}
