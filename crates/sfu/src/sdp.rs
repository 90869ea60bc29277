//! Small text transformations of SDP and candidate strings, kept apart so they can be
//! tested without a peer connection.

/// Rewrites the audio/video sections of an offer from a peer that may not publish so that
/// the answer cannot accept its media: `sendrecv` becomes `recvonly`, `sendonly` becomes
/// `inactive`, and its simulcast send declarations are dropped. Other lines are unchanged.
pub fn receive_only(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut in_media = false;
    for line in sdp.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        let eol = &line[bare.len()..];
        if let Some(m) = bare.strip_prefix("m=") {
            in_media = m.starts_with("audio") || m.starts_with("video");
        }
        if in_media {
            if bare == "a=sendrecv" {
                out.push_str("a=recvonly");
                out.push_str(eol);
                continue;
            }
            if bare == "a=sendonly" {
                out.push_str("a=inactive");
                out.push_str(eol);
                continue;
            }
            if bare.starts_with("a=simulcast:")
                || (bare.starts_with("a=rid:") && bare.contains(" send"))
            {
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// Sets the `a=msid` (and `a=ssrc:… msid:`) lines of the media sections whose mid is in
/// `msids` to `(mid, stream id, track id)`: a reused m-line names its current publisher.
/// The mid is read from the section's `a=mid:` line wherever it stands in the section.
pub fn rewrite_msids(sdp: &str, msids: &[(str0m::media::Mid, String, String)]) -> String {
    if msids.is_empty() {
        return sdp.to_string();
    }
    let mut out = String::with_capacity(sdp.len() + 64);
    let mut section: Vec<&str> = Vec::new();
    let flush = |section: &mut Vec<&str>, out: &mut String| {
        let mid = section
            .iter()
            .find_map(|l| l.trim_end_matches(['\r', '\n']).strip_prefix("a=mid:"));
        let target = mid.and_then(|m| msids.iter().find(|(x, _, _)| x.to_string() == m));
        for line in section.drain(..) {
            let bare = line.trim_end_matches(['\r', '\n']);
            let eol = &line[bare.len()..];
            let Some((_, stream, track)) = target else {
                out.push_str(line);
                continue;
            };
            if bare.starts_with("a=msid:") {
                out.push_str(&format!("a=msid:{stream} {track}{eol}"));
            } else if let Some(rest) = bare.strip_prefix("a=ssrc:") {
                match rest.split_once(' ') {
                    Some((ssrc, attr)) if attr.starts_with("msid:") => {
                        out.push_str(&format!("a=ssrc:{ssrc} msid:{stream} {track}{eol}"));
                    }
                    _ => out.push_str(line),
                }
            } else {
                out.push_str(line);
            }
        }
    };
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        section.push(line);
    }
    flush(&mut section, &mut out);
    out
}

/// The `candidate:...` form of a trickled candidate: accepts it with or without `a=` and
/// surrounding whitespace. `None` for the end-of-candidates marker (empty string).
pub fn normalize_candidate(candidate: &str) -> Option<&str> {
    let c = candidate.trim();
    let c = c.strip_prefix("a=").unwrap_or(c);
    (!c.is_empty()).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_msids_names_the_current_publisher_of_a_reused_mline() {
        let sdp = "v=0\r\ns=-\r\na=msid-semantic: WMS alice\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:alice a0\r\na=ssrc:1 cname:x\r\na=ssrc:1 msid:alice a0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:alice v0\r\na=mid:1\r\n";
        let map = [(
            str0m::media::Mid::from("1"),
            "bob".to_string(),
            "video-7".to_string(),
        )];
        let got = rewrite_msids(sdp, &map);
        assert!(
            got.contains(
                "a=mid:0\r\na=msid:alice a0\r\na=ssrc:1 cname:x\r\na=ssrc:1 msid:alice a0\r\n"
            ),
            "{got}"
        );
        assert!(
            got.ends_with("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:bob video-7\r\na=mid:1\r\n"),
            "{got}"
        );
        assert_eq!(rewrite_msids(sdp, &[]), sdp);
    }

    #[test]
    fn receive_only_rewrites_media_sections_only() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\na=sendrecv\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=rid:h send\r\na=simulcast:send h;m\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\na=sendrecv\r\n";
        let got = receive_only(sdp);
        let lines: Vec<&str> = got.split("\r\n").collect();
        assert_eq!(lines[3], "a=sendrecv", "session level untouched");
        assert_eq!(lines[6], "a=recvonly");
        assert_eq!(lines[9], "a=inactive");
        assert!(!got.contains("a=rid:h send"));
        assert!(!got.contains("a=simulcast"));
        assert!(
            got.ends_with("a=mid:2\r\na=sendrecv\r\n"),
            "application untouched"
        );
    }

    #[test]
    fn candidate_forms() {
        let c = "candidate:1 1 udp 2113937151 192.0.2.1 5000 typ host";
        assert_eq!(normalize_candidate(c), Some(c));
        assert_eq!(normalize_candidate(&format!("a={c}\r\n")), Some(c));
        assert_eq!(normalize_candidate(""), None);
        assert_eq!(normalize_candidate("  "), None);
    }
}
