//! What a room name and a display name may be.

/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 64;

/// Longest display name, in characters after trimming.
pub const MAX_NAME_CHARS: usize = 64;

/// A room name: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn validate_room(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > MAX_ROOM_CHARS {
        return Err(format!(
            "a room name has 1 to {MAX_ROOM_CHARS} characters; this one has {}",
            room.chars().count()
        ));
    }
    if let Some(bad) = room
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "a room name may contain only letters A-Z a-z, digits, '_' and '-', not {bad:?}"
        ));
    }
    Ok(())
}

/// A display name: trimmed, 1–64 characters, no control characters. Returns it trimmed.
pub fn validate_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("a display name is needed: add \"name\" to join".to_owned());
    }
    let n = name.chars().count();
    if n > MAX_NAME_CHARS {
        return Err(format!(
            "a display name has at most {MAX_NAME_CHARS} characters; this one has {n}"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a display name may not contain control characters".to_owned());
    }
    Ok(name.to_owned())
}
