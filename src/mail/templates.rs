//! Email templates (minijinja). Each message is three templates:
//! `NAME.subject`, `NAME.txt` and `NAME.html`; only `.html` is autoescaped,
//! so a value like `<script>` shows as text in the HTML part and unchanged
//! in the plain part.

use std::sync::OnceLock;

use minijinja::Environment;
use serde::Serialize;

const TEMPLATES: &[(&str, &str)] = &[
    ("test.subject", include_str!("templates/test.subject")),
    ("test.txt", include_str!("templates/test.txt")),
    ("test.html", include_str!("templates/test.html")),
    (
        "dead_letter_digest.subject",
        include_str!("templates/dead_letter_digest.subject"),
    ),
    (
        "dead_letter_digest.txt",
        include_str!("templates/dead_letter_digest.txt"),
    ),
    (
        "dead_letter_digest.html",
        include_str!("templates/dead_letter_digest.html"),
    ),
];

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // A missing variable is a bug in our payload, not an empty string.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("built-in template {name} is invalid: {e}"));
        }
        env
    })
}

pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Renders message `name` with `context`. An unknown name or a missing
/// variable is an error of ours, which the caller treats as permanent.
pub fn render(name: &str, context: impl Serialize) -> Result<Rendered, minijinja::Error> {
    let env = environment();
    let context = minijinja::Value::from(minijinja::value::Serde(&context));
    let part = |suffix: &str| {
        env.get_template(&format!("{name}.{suffix}"))?
            .render(context.clone())
    };
    Ok(Rendered {
        subject: part("subject")?.trim().to_string(),
        text: part("txt")?,
        html: part("html")?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let rendered = super::render("test", json!({"address": "<b>x</b>@example.com"})).unwrap();
        assert!(rendered.html.contains("&lt;b&gt;x"), "{}", rendered.html);
        assert!(!rendered.html.contains("<b>x"), "{}", rendered.html);
        assert!(rendered.text.contains("<b>x</b>@example.com"));
    }

    #[test]
    fn unknown_templates_and_missing_values_are_errors() {
        assert!(super::render("nope", json!({})).is_err());
        assert!(super::render("test", json!({})).is_err());
    }
}
