//! Renders the templates in `templates/`, embedded in the binary so `anchor` is
//! self-contained. They are read through this crate's `templates` symlink to the
//! repository's top-level `templates/`, so a packaged crate carries them too.

use minijinja::{Environment, UndefinedBehavior};

use crate::context::Context;
use crate::{Error, Result};

/// Each template and the file it renders, in output order.
pub(crate) const FILES: &[(&str, &str)] = &[
    ("mod.rs.j2", "mod.rs"),
    ("catalog.rs.j2", "catalog.rs"),
    ("params.rs.j2", "params.rs"),
    ("definitions.rs.j2", "definitions.rs"),
    ("executor.rs.j2", "executor.rs"),
    ("runner.rs.j2", "runner.rs"),
    ("testing.rs.j2", "testing.rs"),
];

/// The embedded template sources.
const TEMPLATES: &[(&str, &str)] = &[
    ("mod.rs.j2", include_str!("../templates/mod.rs.j2")),
    ("catalog.rs.j2", include_str!("../templates/catalog.rs.j2")),
    ("params.rs.j2", include_str!("../templates/params.rs.j2")),
    (
        "definitions.rs.j2",
        include_str!("../templates/definitions.rs.j2"),
    ),
    (
        "executor.rs.j2",
        include_str!("../templates/executor.rs.j2"),
    ),
    ("runner.rs.j2", include_str!("../templates/runner.rs.j2")),
    ("testing.rs.j2", include_str!("../templates/testing.rs.j2")),
];

/// A configured minijinja environment holding the templates.
pub(crate) struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    pub(crate) fn new() -> Result<Self> {
        let mut env = Environment::new();
        // A misspelt variable must fail generation instead of rendering as nothing.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // The output is Rust, never HTML: no escaping.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|source| Error::Template {
                    template: (*name).to_string(),
                    source,
                })?;
        }
        Ok(Renderer { env })
    }

    pub(crate) fn render(&self, template: &str, context: &Context) -> Result<String> {
        let to_error = |source| Error::Template {
            template: template.to_string(),
            source,
        };
        self.env
            .get_template(template)
            .map_err(to_error)?
            .render(context)
            .map_err(to_error)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{FILES, TEMPLATES};

    /// `templates/` inside this crate is a symlink to the repository's top-level `templates/`
    /// (the packaged crate holds a copy); either way it must hold exactly the embedded
    /// templates, so a new template file cannot be forgotten in `TEMPLATES`.
    #[test]
    fn the_embedded_templates_are_the_files_of_templates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = TEMPLATES.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
        for (name, source) in TEMPLATES {
            assert_eq!(std::fs::read_to_string(dir.join(name)).unwrap(), *source);
            assert!(FILES.iter().any(|(template, _)| template == name), "{name}");
        }
    }
}
