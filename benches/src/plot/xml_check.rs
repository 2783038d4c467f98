//! A small well-formedness checker for the XML this module writes (XML 1.0 §2.1, §3.1):
//! one root element, every start tag closed by a matching end tag in order, attribute values
//! quoted and unique per element, and `<` and `&` in text or attributes only as markup or an
//! entity reference. It knows no DTDs, comments or CDATA, which the writer never produces.

/// Checks `doc`; the error says what is wrong and at which byte.
pub(crate) fn check_well_formed(doc: &str) -> Result<(), String> {
    let bytes = doc.as_bytes();
    let mut pos = 0;
    if doc.starts_with("<?xml") {
        pos = doc.find("?>").ok_or("unterminated XML declaration")? + 2;
    }
    let mut open: Vec<&str> = Vec::new();
    let mut roots = 0;
    while pos < bytes.len() {
        if bytes[pos] != b'<' {
            let end = doc[pos..].find('<').map_or(bytes.len(), |i| pos + i);
            let chars = &doc[pos..end];
            if open.is_empty() && !chars.trim().is_empty() {
                return Err(format!("text outside the root element at {pos}"));
            }
            check_chars(chars, pos)?;
            pos = end;
            continue;
        }
        let close =
            doc[pos..].find('>').map(|i| pos + i).ok_or(format!("unclosed tag at {pos}"))?;
        let tag = &doc[pos + 1..close];
        if let Some(name) = tag.strip_prefix('/') {
            let expected =
                open.pop().ok_or(format!("end tag </{name}> with nothing open at {pos}"))?;
            if name.trim() != expected {
                return Err(format!("</{name}> closes <{expected}> at {pos}"));
            }
        } else {
            let (body, empty) = match tag.strip_suffix('/') {
                Some(body) => (body, true),
                None => (tag, false),
            };
            let name = parse_start_tag(body, pos)?;
            if open.is_empty() {
                roots += 1;
                if roots > 1 {
                    return Err(format!("a second root element <{name}> at {pos}"));
                }
            }
            if !empty {
                open.push(name);
            }
        }
        pos = close + 1;
    }
    match (open.last(), roots) {
        (Some(name), _) => Err(format!("<{name}> is never closed")),
        (None, 0) => Err("no root element".into()),
        (None, _) => Ok(()),
    }
}

/// Checks a start tag's name and attributes; returns the name.
fn parse_start_tag(body: &str, at: usize) -> Result<&str, String> {
    let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
    let name = &body[..name_end];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':') {
        return Err(format!("bad element name {name:?} at {at}"));
    }
    let mut rest = body[name_end..].trim_start();
    let mut seen: Vec<&str> = Vec::new();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or(format!("attribute without a value in <{name}> at {at}"))?;
        let attribute = rest[..eq].trim();
        if attribute.is_empty() || attribute.contains(char::is_whitespace) {
            return Err(format!("bad attribute name {attribute:?} in <{name}> at {at}"));
        }
        if seen.contains(&attribute) {
            return Err(format!("attribute {attribute} twice in <{name}> at {at}"));
        }
        seen.push(attribute);
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next().filter(|&q| q == '"' || q == '\'');
        let quote = quote.ok_or(format!("unquoted value of {attribute} in <{name}> at {at}"))?;
        let value_end = after[1..]
            .find(quote)
            .ok_or(format!("unterminated value of {attribute} in <{name}> at {at}"))?;
        let value = &after[1..1 + value_end];
        if value.contains('<') {
            return Err(format!("'<' in the value of {attribute} in <{name}> at {at}"));
        }
        check_chars(value, at)?;
        rest = after[value_end + 2..].trim_start();
    }
    Ok(name)
}

/// Every `&` must start one of the predefined entities or a character reference.
fn check_chars(chars: &str, at: usize) -> Result<(), String> {
    let mut rest = chars;
    while let Some(amp) = rest.find('&') {
        let after = &rest[amp + 1..];
        let semi = after.find(';').ok_or(format!("bare '&' near {at}"))?;
        let entity = &after[..semi];
        let known = matches!(entity, "amp" | "lt" | "gt" | "quot" | "apos")
            || entity.strip_prefix('#').is_some_and(|n| {
                n.strip_prefix('x').map_or_else(
                    || !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()),
                    |hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()),
                )
            });
        if !known {
            return Err(format!("unknown entity &{entity}; near {at}"));
        }
        rest = &after[semi + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_well_formed_documents() {
        check_well_formed(r#"<?xml version="1.0"?><a x="1" y='2'><b/>t &amp; u<c>&#38;</c></a>"#)
            .unwrap();
    }

    #[test]
    fn rejects_what_a_parser_would() {
        for bad in [
            "<a><b></a></b>",
            "<a>",
            "</a>",
            "<a/><b/>",
            "<a x=1/>",
            r#"<a x="1" x="2"/>"#,
            "<a>1 < 2</a>",
            "<a>fish & chips</a>",
            "<a>&nbsp;</a>",
            r#"<a t="x&y"/>"#,
            "text<a/>",
            "",
        ] {
            assert!(check_well_formed(bad).is_err(), "accepted {bad:?}");
        }
    }
}
