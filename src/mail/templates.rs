//! Email templates (minijinja). Each message is three templates:
//! `NAME.subject`, `NAME.txt` and `NAME.html`; only `.html` is autoescaped,
//! so a value like `<script>` shows as text in the HTML part and unchanged
//! in the plain part.

use std::sync::OnceLock;

use minijinja::Environment;
use serde::Serialize;

/// The three parts of each message, compiled into the binary.
macro_rules! messages {
    ($($name:literal),+ $(,)?) => {
        &[$(
            (concat!($name, ".subject"), include_str!(concat!("templates/", $name, ".subject"))),
            (concat!($name, ".txt"), include_str!(concat!("templates/", $name, ".txt"))),
            (concat!($name, ".html"), include_str!(concat!("templates/", $name, ".html"))),
        )+]
    };
}

const TEMPLATES: &[(&str, &str)] = messages!(
    "test",
    "license_key",
    "dead_letter_digest",
    "out_of_stock",
    "needs_attention",
    "low_stock",
    "database_unavailable",
    "endpoint_disabled",
    "order_refunded",
    "refund_notice",
    "background_failure"
);

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

    fn license_key(logo_url: Option<&str>) -> super::Rendered {
        let context = json!({
            "key": "O0O0-l1I1-<B8>",
            "product": "Course 101",
            "order_id": "WC-1001",
            "logo_url": logo_url,
        });
        super::render("license_key", &context).unwrap()
    }

    /// The designer brief: tables only, inline CSS, the key centred in a
    /// monospace box, the logo from the configured URL, a plain-text part.
    #[test]
    fn the_key_email_follows_the_design_rules() {
        let mail = license_key(Some("https://shop.example/logo.png"));
        let html = mail.html.to_ascii_lowercase();
        assert!(!html.contains("<div"), "no div layout");
        assert!(!html.contains("<style"), "CSS is inline only");
        assert!(!html.contains("class="), "CSS is inline only");
        assert!(html.contains("<table"));
        let key_cell = html
            .split("<td")
            .find(|cell| cell.contains("o0o0-l1i1-&lt;b8&gt;"))
            .expect("the key, escaped, in a table cell");
        assert!(key_cell.contains("font-family:courier"), "{key_cell}");
        assert!(key_cell.contains("consolas"), "{key_cell}");
        assert!(
            key_cell.contains("text-align:center") && key_cell.contains("align=\"center\""),
            "{key_cell}"
        );
        assert!(
            key_cell.contains("border:2px dashed"),
            "a distinct box: {key_cell}"
        );
        // Autoescaping writes '/' as an entity, which every client decodes.
        assert!(
            html.contains("<img src=\"https:&#x2f;&#x2f;shop.example&#x2f;logo.png\""),
            "{html}"
        );
        assert!(
            mail.text.contains("O0O0-l1I1-<B8>"),
            "the text part has the key as is"
        );
        assert_eq!(mail.subject, "Your license key for Course 101");

        let without_logo = license_key(None);
        assert!(!without_logo.html.contains("<img"));
    }

    /// No line of the key email reaches 76 characters, so it goes out as
    /// 7bit text: no quoted-printable escapes for a reader of the raw
    /// message, and no encoding pass on the busiest path of a sale.
    #[test]
    fn the_key_email_needs_no_transfer_encoding() {
        for logo in [None, Some("https://shop.example/logo.png")] {
            let mail = license_key(logo);
            for part in [&mail.html, &mail.text] {
                let long: Vec<&str> = part.lines().filter(|l| l.len() >= 76).collect();
                assert!(long.is_empty(), "{long:#?}");
                assert!(part.is_ascii());
            }
        }
    }

    #[test]
    fn unknown_templates_and_missing_values_are_errors() {
        assert!(super::render("nope", json!({})).is_err());
        assert!(super::render("test", json!({})).is_err());
    }
}
