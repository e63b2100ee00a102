//! `--format` for `images`, `ps` and `inspect`: the subset of Go's
//! text/template the docker CLI's users write. `{{.Field}}` and dotted
//! paths (`{{.Config.Env}}`), `{{json .}}` and `{{json .Path}}`, literal
//! text with `\t` and `\n`, and a leading `table ` that prints a header
//! and aligns the tab-separated columns as docker does. Anything else
//! (`range`, `if`, pipes, functions other than `json`) is refused with
//! the part that is not understood, never printed half-right.

use serde_json::Value;

/// A parsed `--format` value.
#[derive(Debug, PartialEq)]
pub struct Template {
    table: bool,
    parts: Vec<Part>,
}

#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    /// A path of field names from the row (empty: the row itself).
    Field(Vec<String>),
    /// The same, as JSON.
    Json(Vec<String>),
}

impl Template {
    /// Parses `text`; the error names the action it does not understand.
    pub fn parse(text: &str) -> Result<Template, String> {
        let (table, body) = match text.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, text),
        };
        let mut parts = Vec::new();
        let mut rest = body;
        while let Some(start) = rest.find("{{") {
            push_text(&mut parts, &rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("--format {text:?}: an action {{{{ is not closed"))?;
            let action = after[..end].trim();
            parts.push(parse_action(action).ok_or_else(|| {
                format!(
                    "--format {text:?}: {{{{{action}}}}} is not supported (only {{{{.Field}}}}, \
                     {{{{.Path.To.Field}}}}, {{{{json .}}}} and {{{{json .Field}}}})"
                )
            })?);
            rest = &after[end + 2..];
        }
        push_text(&mut parts, rest);
        Ok(Template { table, parts })
    }

    /// One row rendered.
    pub fn render(&self, row: &Value) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(path) => out.push_str(&go_text(lookup(row, path))),
                Part::Json(path) => out.push_str(&lookup(row, path).to_string()),
            }
        }
        out
    }

    /// The header row of a table: each field's column title (from
    /// `title`, which knows the command's names; else the field in
    /// capitals), the text between them kept.
    pub fn header(&self, title: &dyn Fn(&str) -> Option<&'static str>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(path) | Part::Json(path) => {
                    let name = path.join(".");
                    out.push_str(
                        title(&name)
                            .map_or(name.to_uppercase(), str::to_owned)
                            .as_str(),
                    );
                }
            }
        }
        out
    }

    /// Renders `rows`; a table gets its header and columns padded to
    /// line up (three spaces between, as docker's tabwriter).
    pub fn render_all(
        &self,
        rows: &[Value],
        title: &dyn Fn(&str) -> Option<&'static str>,
    ) -> String {
        let mut lines: Vec<String> = rows.iter().map(|row| self.render(row)).collect();
        if !self.table {
            return lines.iter().map(|line| format!("{line}\n")).collect();
        }
        lines.insert(0, self.header(title));
        align_columns(&lines)
    }
}

fn push_text(parts: &mut Vec<Part>, text: &str) {
    if !text.is_empty() {
        parts.push(Part::Text(text.replace("\\t", "\t").replace("\\n", "\n")));
    }
}

/// `.` or `.A.B` as a path; `json` before it makes it JSON.
fn parse_action(action: &str) -> Option<Part> {
    let (json, path) = match action.strip_prefix("json") {
        Some(rest) if rest.starts_with(char::is_whitespace) => (true, rest.trim()),
        _ => (false, action),
    };
    let fields = path.strip_prefix('.')?;
    let path: Vec<String> = if fields.is_empty() {
        Vec::new()
    } else {
        fields.split('.').map(str::to_owned).collect()
    };
    let is_name = |f: &String| !f.is_empty() && f.chars().all(|c| c.is_alphanumeric() || c == '_');
    if !path.iter().all(is_name) {
        return None;
    }
    Some(if json {
        Part::Json(path)
    } else {
        Part::Field(path)
    })
}

fn lookup<'a>(row: &'a Value, path: &[String]) -> &'a Value {
    path.iter()
        .fold(row, |value, field| value.get(field).unwrap_or(&Value::Null))
}

/// A value as Go's template prints it: strings bare, lists `[a b]`,
/// maps `map[k:v]`, nothing as `<no value>`.
fn go_text(value: &Value) -> String {
    match value {
        Value::Null => "<no value>".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(go_text).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_text(v)))
                .collect();
            format!("map[{}]", items.join(" "))
        }
        other => other.to_string(),
    }
}

/// Lines whose cells are separated by tabs, each column padded to its
/// widest cell plus three spaces (the last cell is not padded).
pub fn align_columns(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .map(|line| line.split('\t').collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
            }
        }
        // An empty last cell leaves no padding behind.
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_paths_json_and_tables() {
        let row = serde_json::json!({"ID": "abc", "Repository": "busybox",
            "Config": {"Env": ["A=1", "B=2"], "Labels": {"k": "v"}}});
        let t = Template::parse("{{.ID}} {{ .Repository }}:{{.Config.Env}}").unwrap();
        assert_eq!(t.render(&row), "abc busybox:[A=1 B=2]");
        let t = Template::parse("{{json .Config.Labels}}|{{.Nope}}|{{.Config.Labels}}").unwrap();
        assert_eq!(t.render(&row), r#"{"k":"v"}|<no value>|map[k:v]"#);
        assert_eq!(
            Template::parse("{{json .}}").unwrap().render(&row),
            row.to_string()
        );
        let t = Template::parse("table {{.Repository}}\\t{{.ID}}").unwrap();
        let rows = [
            row.clone(),
            serde_json::json!({"ID": "d", "Repository": "a-longer-name"}),
        ];
        let title = |f: &str| (f == "ID").then_some("IMAGE ID");
        assert_eq!(
            t.render_all(&rows, &title),
            "REPOSITORY      IMAGE ID\nbusybox         abc\na-longer-name   d\n"
        );
    }

    #[test]
    fn what_is_not_understood_is_refused() {
        for bad in [
            "{{range .}}",
            "{{.ID | upper}}",
            "{{.ID",
            "{{ID}}",
            "{{.A..B}}",
        ] {
            let error = Template::parse(bad).unwrap_err();
            assert!(error.contains("--format"), "{bad}: {error}");
        }
        let row = serde_json::json!({"ID": "x"});
        let plain = Template::parse("tables {{.ID}}").unwrap();
        assert_eq!(plain.render_all(&[row], &|_| None), "tables x\n");
    }
}
