//! Redis-compatible glob matching (`*`, `?`, `[abc]`, `[^a-z]`, `\x`): KEYS and SCAN MATCH in
//! the server, placement rules here.

/// True when `text` matches the Redis glob `pattern` (case sensitive).
///
/// The empty text matches only the empty pattern and `*`, as in Redis: its matcher never looks
/// at a pattern for an empty string, and KEYS and SCAN take `*` alone as "everything" without
/// matching (so `KEYS *` lists the empty key and `KEYS **` does not).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    if text.is_empty() {
        return pattern.is_empty() || pattern == b"*";
    }
    glob_from(pattern, text)
}

/// Matches one pattern element (not `*`) starting at `p[pi]` against `c`; returns whether it
/// matched and where the next element starts.
fn match_one(p: &[u8], pi: usize, c: u8) -> (bool, usize) {
    match p[pi] {
        b'?' => (true, pi + 1),
        b'\\' if pi + 1 < p.len() => (p[pi + 1] == c, pi + 2),
        b'[' => {
            let mut i = pi + 1;
            let negate = p.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut matched = false;
            while i < p.len() && p[i] != b']' {
                if p[i] == b'\\' && i + 1 < p.len() {
                    matched |= p[i + 1] == c;
                    i += 2;
                } else if i + 2 < p.len() && p[i + 1] == b'-' {
                    let (lo, hi) = (p[i].min(p[i + 2]), p[i].max(p[i + 2]));
                    matched |= (lo..=hi).contains(&c);
                    i += 3;
                } else {
                    matched |= p[i] == c;
                    i += 1;
                }
            }
            // An unterminated class ends at the end of the pattern, as in Redis.
            (matched != negate, (i + 1).min(p.len()))
        }
        other => (other == c, pi + 1),
    }
}

/// Iterative matcher with one backtrack point (the last `*`): O(len(p) * len(t)), so a
/// hostile pattern cannot make KEYS or SCAN spin.
fn glob_from(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            while pi < p.len() && p[pi] == b'*' {
                pi += 1;
            }
            star = Some((pi, ti));
            continue;
        }
        if pi < p.len() {
            let (ok, next) = match_one(p, pi, t[ti]);
            if ok {
                pi = next;
                ti += 1;
                continue;
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn patterns() {
        let yes: &[(&str, &str)] = &[
            ("*", ""),
            ("*", "abc"),
            ("a*", "abc"),
            ("*c", "abc"),
            ("a?c", "abc"),
            ("h[ae]llo", "hello"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("user:*:name", "user:42:name"),
            ("a\\*b", "a*b"),
            ("**x", "abx"),
        ];
        for (p, t) in yes {
            assert!(
                glob_match(p.as_bytes(), t.as_bytes()),
                "{p} should match {t}"
            );
        }
        let no: &[(&str, &str)] = &[
            ("a*", "bc"),
            ("a?c", "ac"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("abc", "abcd"),
            ("a\\*b", "axb"),
            // Redis never matches the empty string against a pattern other than `*`.
            ("**", ""),
            ("?*", ""),
            ("*x*", ""),
        ];
        for (p, t) in no {
            assert!(
                !glob_match(p.as_bytes(), t.as_bytes()),
                "{p} should not match {t}"
            );
        }
    }

    #[test]
    fn hostile_pattern_terminates() {
        let p = "*a".repeat(50) + "b";
        let t = "a".repeat(60);
        assert!(!glob_match(p.as_bytes(), t.as_bytes()));
    }
}
