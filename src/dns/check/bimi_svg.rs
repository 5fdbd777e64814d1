//! SVG Tiny Portable/Secure (the BIMI logo profile): what a receiver refuses before it shows a
//! logo. The file is read as XML (quick-xml, no entity expansion, nothing fetched) and checked
//! for: the `tiny-ps` base profile and version 1.2 on the root `<svg>`, a `<title>`, a square
//! `viewBox`, no `x=`/`y=` on the root, no scripts, no animation, no `<image>` or
//! `<foreignObject>`, no reference outside the file, no entity declarations, and the size limit.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// Largest logo BIMI allows (the BIMI group's guidance: 32 KiB).
pub(crate) const MAX_LOGO_SIZE: usize = 32 * 1024;

/// Elements SVG Tiny PS forbids.
const FORBIDDEN: &[&str] = &[
    "script",
    "foreignObject",
    "image",
    "animate",
    "animateColor",
    "animateMotion",
    "animateTransform",
    "set",
    "video",
    "audio",
    "iframe",
];

/// Every reason `svg` is not an acceptable SVG Tiny PS logo; empty when it is.
pub(crate) fn problems(svg: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if svg.len() > MAX_LOGO_SIZE {
        out.push(format!(
            "{} bytes, more than the {MAX_LOGO_SIZE} BIMI allows",
            svg.len()
        ));
    }
    let Ok(text) = std::str::from_utf8(svg) else {
        out.push("not UTF-8 text".into());
        return out;
    };
    let mut reader = Reader::from_str(text);
    let mut root_seen = false;
    let mut title = false;
    let mut depth = 0usize;
    loop {
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                out.push(format!("not well-formed XML ({e})"));
                return out;
            }
        };
        let (element, empty) = match &event {
            Event::Eof => break,
            Event::DocType(d) => {
                if AsRef::<str>::as_ref(d).contains("ENTITY") {
                    out.push("declares XML entities (not allowed)".into());
                }
                continue;
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                continue;
            }
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            _ => continue,
        };
        let name = element.local_name().as_ref().to_string();
        if !root_seen {
            root_seen = true;
            if name != "svg" {
                out.push(format!("the root element is <{name}>, not <svg>"));
                return out;
            }
            root(element, &mut out);
        } else if depth == 1 && name == "title" {
            title = true;
        }
        if FORBIDDEN.contains(&name.as_str()) {
            out.push(format!("contains <{name}> (not allowed in SVG Tiny PS)"));
        }
        references(&name, element, &mut out);
        if !empty {
            depth += 1;
        }
    }
    if !root_seen {
        out.push("no <svg> element".into());
    } else if !title {
        out.push("no <title> under <svg> (SVG Tiny PS requires one, naming the brand)".into());
    }
    out.dedup();
    out
}

/// The root `<svg>`'s attributes: profile, version, square viewBox, no position.
fn root(svg: &BytesStart<'_>, out: &mut Vec<String>) {
    let attr = |key: &str| {
        svg.attributes()
            .flatten()
            .find(|a| a.key.local_name().as_ref() == key)
            .map(|a| a.value.to_string())
    };
    match attr("baseProfile").as_deref() {
        Some("tiny-ps") => {}
        Some(other) => out.push(format!("baseProfile=\"{other}\", not \"tiny-ps\"")),
        None => out.push("no baseProfile=\"tiny-ps\" on <svg>".into()),
    }
    if attr("version").as_deref() != Some("1.2") {
        out.push("<svg> lacks version=\"1.2\"".into());
    }
    for pos in ["x", "y"] {
        if attr(pos).is_some() {
            out.push(format!("<svg> has {pos}= (not allowed on the root)"));
        }
    }
    match attr("viewBox") {
        None => out.push("no viewBox on <svg> (a square one is required)".into()),
        Some(v) => {
            let nums: Vec<f64> = v
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .filter_map(|s| s.parse().ok())
                .collect();
            match nums.as_slice() {
                [_, _, w, h] if *w > 0.0 && (w - h).abs() < f64::EPSILON => {}
                [_, _, w, h] => out.push(format!("viewBox is {w} by {h}: the logo must be square")),
                _ => out.push(format!("viewBox=\"{v}\" is not four numbers")),
            }
        }
    }
}

/// References outside the file: `href`/`xlink:href` not starting with `#`, and `url(...)` to
/// anything but a fragment in a `style` or presentation attribute.
fn references(name: &str, element: &BytesStart<'_>, out: &mut Vec<String>) {
    for a in element.attributes().flatten() {
        let key = a.key.as_ref().to_string();
        let value = a.value.to_string();
        let local = key.rsplit(':').next().unwrap_or(&key);
        let external = if local == "href" {
            !value.trim_start().starts_with('#')
        } else {
            value.contains("url(") && !value.replace(' ', "").contains("url(#")
        };
        if external {
            out.push(format!(
                "<{name} {key}=\"{value}\"> refers outside the file (not allowed)"
            ));
        }
        if local.starts_with("on") && local.len() > 2 {
            out.push(format!(
                "<{name}> has an event handler {key}= (not allowed)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" version="1.2" baseProfile="tiny-ps" viewBox="0 0 100 100">
  <title>Example</title>
  <defs><linearGradient id="g"><stop offset="0" stop-color="#f00"/></linearGradient></defs>
  <circle cx="50" cy="50" r="40" fill="url(#g)"/>
  <use href="#g"/>
</svg>"##;

    #[test]
    fn a_tiny_ps_logo_passes_and_each_breach_is_named() {
        assert!(
            problems(GOOD.as_bytes()).is_empty(),
            "{:?}",
            problems(GOOD.as_bytes())
        );
        let script = GOOD.replace("<title>", "<script>alert(1)</script><title>");
        assert!(problems(script.as_bytes())[0].contains("<script>"));
        let image = GOOD.replace(
            "<use href=\"#g\"/>",
            "<image href=\"https://cdn.example.com/x.png\" width=\"1\" height=\"1\"/>",
        );
        let p = problems(image.as_bytes());
        assert!(p.iter().any(|m| m.contains("<image>")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("refers outside")), "{p:?}");
        let wide = GOOD.replace("0 0 100 100", "0 0 200 100");
        assert!(problems(wide.as_bytes())[0].contains("square"));
        let profile = GOOD.replace("tiny-ps", "tiny");
        assert!(problems(profile.as_bytes())[0].contains("baseProfile"));
        let untitled = GOOD.replace("<title>Example</title>", "");
        assert!(problems(untitled.as_bytes())[0].contains("<title>"));
        let big = GOOD.replace(
            "<title>",
            &format!("<!--{}--><title>", "x".repeat(MAX_LOGO_SIZE)),
        );
        assert!(problems(big.as_bytes())[0].contains("bytes"));
        assert!(
            !problems(b"<svg").is_empty(),
            "broken XML is named, not a panic"
        );
        assert!(!problems(&[0xff, 0xfe]).is_empty());
    }
}
