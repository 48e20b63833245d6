//! `drctl config check`: the resolved config as TOML with secrets masked.

use super::LoadedConfig;

/// Keys whose values are secrets wherever they appear.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    // A Slack incoming-webhook URL is itself the credential.
    // Health check headers (`Authorization = "Bearer ..."`) are credentials too.
    (k.contains("password")
        || k.contains("secret")
        || k.contains("token")
        || k == "webhook_url"
        || k == "authorization"
        || k == "cookie"
        || k == "x-api-key")
        && !k.ends_with("_env")
        && !k.ends_with("_file")
}

fn mask(value: &mut toml::Value, key: &str) {
    match value {
        toml::Value::Table(t) => {
            // A ping URL is itself the credential (hc-ping.com/<uuid>):
            // shown as its origin only.
            if t.get("type").and_then(|v| v.as_str()) == Some("ping") {
                if let Some(toml::Value::String(u)) = t.get_mut("url") {
                    *u = origin_only(u);
                }
            }
            for (k, v) in t.iter_mut() {
                mask(v, k);
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(|v| mask(v, key)),
        toml::Value::String(s) => {
            if is_secret_key(key) {
                *s = "***".into();
            } else if let Some(masked) = crate::base::secret::mask_url(s) {
                // Any URL, under any key: userinfo and ?token= alike.
                *s = masked;
            }
        }
        _ => {}
    }
}

/// `https://hc-ping.com/***`: enough to tell which service, nothing to use.
fn origin_only(u: &str) -> String {
    url::Url::parse(u)
        .ok()
        .and_then(|p| p.host_str().map(|h| format!("{}://{h}/***", p.scheme())))
        .unwrap_or_else(|| "***".into())
}

/// Render the resolved configuration with every secret replaced by `***`.
pub fn render_masked(loaded: &LoadedConfig) -> String {
    let mut value = match toml::Value::try_from(&loaded.config) {
        Ok(v) => v,
        Err(e) => return format!("# cannot render config: {e}\n"),
    };
    mask(&mut value, "");
    let body =
        toml::to_string_pretty(&value).unwrap_or_else(|e| format!("# cannot render config: {e}\n"));
    let mut out = String::new();
    if loaded.files.is_empty() {
        out.push_str("# source: embedded defaults (no config file found)\n");
    } else {
        for f in &loaded.files {
            out.push_str(&format!("# source: {}\n", f.display()));
        }
    }
    out.push_str(&crate::base::secret::redact(&body));
    out
}
