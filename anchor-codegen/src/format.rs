//! Parses rendered code and pretty-prints it, so output is formatted and a template bug is
//! a generation error.

use crate::{Error, Result};

/// Parses `code` as a Rust file and pretty-prints it with prettyplease.
pub(crate) fn format_rust(file: &str, code: &str) -> Result<String> {
    let mut parsed: syn::File = syn::parse_file(code).map_err(|source| Error::InvalidRust {
        file: file.to_string(),
        source,
    })?;
    syn::visit_mut::visit_file_mut(&mut DocSpacer, &mut parsed);
    Ok(separate_items(&prettyplease::unparse(&parsed)))
}

/// Gives every doc comment line a leading space (`/// text`, not `///text`); typify writes
/// its doc attributes without one.
struct DocSpacer;

impl syn::visit_mut::VisitMut for DocSpacer {
    fn visit_attribute_mut(&mut self, attr: &mut syn::Attribute) {
        if !attr.path().is_ident("doc") {
            return;
        }
        let syn::Meta::NameValue(meta) = &mut attr.meta else {
            return;
        };
        let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(text),
            ..
        }) = &mut meta.value
        else {
            return;
        };
        let value = text.value();
        if !value.is_empty() && !value.starts_with(' ') && !value.starts_with('\n') {
            let spaced = value
                .lines()
                .map(|line| {
                    if line.is_empty() {
                        String::new()
                    } else {
                        format!(" {line}")
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            *text = syn::LitStr::new(&spaced, text.span());
        }
    }
}

/// Keywords and markers that begin an item (or its doc comment and attributes).
const ITEM_STARTS: &[&str] = &[
    "///", "#[", "pub ", "pub(", "fn ", "impl ", "impl<", "mod ", "const ", "static ", "struct ",
    "enum ", "trait ", "type ", "use ",
];

/// Puts one blank line between sibling items, which prettyplease packs together. A line
/// starts a new item when it begins like an item and follows, at the same indentation, the
/// end of the previous item (`}` or `;`) or the module's inner attributes and docs. rustfmt
/// keeps single blank lines, so the result stays rustfmt-clean.
fn separate_items(code: &str) -> String {
    let mut out = String::with_capacity(code.len() + code.len() / 16);
    let mut previous: Option<&str> = None;
    for line in code.lines() {
        if let Some(prev) = previous {
            let indent = line.len() - line.trim_start().len();
            let prev_indent = prev.len() - prev.trim_start().len();
            let body = line.trim_start();
            let prev_body = prev.trim_start();
            let starts_item = ITEM_STARTS.iter().any(|start| body.starts_with(start));
            let prev_ends_item = prev_body.ends_with('}') || prev_body.ends_with(';');
            let prev_is_header = prev_body.starts_with("//!") || prev_body.starts_with("#![");
            let now_is_header = body.starts_with("//!") || body.starts_with("#![");
            let continues_use = prev_body.starts_with("use ") || prev_body.starts_with("pub use ");
            let is_use = body.starts_with("use ") || body.starts_with("pub use ");
            let is_mod_decl = body.starts_with("pub mod ") && body.ends_with(';');
            let prev_mod_decl = prev_body.starts_with("pub mod ") && prev_body.ends_with(';');
            let same_group = (continues_use && is_use) || (prev_mod_decl && is_mod_decl);
            if indent == prev_indent
                && starts_item
                && !same_group
                && (prev_ends_item || (prev_is_header && !now_is_header))
            {
                out.push('\n');
            }
        }
        out.push_str(line);
        out.push('\n');
        previous = Some(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_code_is_an_error_naming_the_file() {
        let err = format_rust("runner.rs", "pub fn broken( {").unwrap_err();
        assert!(err.to_string().contains("runner.rs"), "{err}");
    }

    #[test]
    fn valid_code_is_formatted() {
        let out = format_rust("mod.rs", "pub   fn  f( )->u8{1}").unwrap();
        assert_eq!(out, "pub fn f() -> u8 {\n    1\n}\n");
    }

    #[test]
    fn doc_comments_get_a_leading_space() {
        let out = format_rust("params.rs", "#[doc = \"Text.\"] pub struct S;").unwrap();
        assert_eq!(out, "/// Text.\npub struct S;\n");
    }

    #[test]
    fn sibling_items_are_separated_by_one_blank_line() {
        let out = format_rust(
            "mod.rs",
            "//! Docs.\n#![allow(clippy::all)] pub mod a; pub mod b; pub use a::X; pub use b::Y; \
             /// F.\n pub fn f() {} pub struct S { pub a: u8, pub b: u8 } \
             impl S { fn g(&self) { let x = 1; let y = x; } fn h() {} }",
        )
        .unwrap();
        assert_eq!(
            out,
            "//! Docs.\n#![allow(clippy::all)]\n\npub mod a;\npub mod b;\n\npub use a::X;\npub use b::Y;\n\n\
             /// F.\npub fn f() {}\n\npub struct S {\n    pub a: u8,\n    pub b: u8,\n}\n\n\
             impl S {\n    fn g(&self) {\n        let x = 1;\n        let y = x;\n    }\n\n    fn h() {}\n}\n"
        );
    }
}
