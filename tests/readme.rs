//! The README and the other docs cannot drift from the code: every
//! `cxpulse` command line in their shell examples parses with the real
//! command line, the command table lists every command and flag, every
//! configuration key and environment variable named exists (and the
//! configuration table lists every key), every metric named is one the
//! engine exports (and the metrics table lists every one), every link
//! resolves, and the "Connect your own topics" example loads and plans.
//! (`tests/own_sources.rs` runs that example against a real broker.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use cxpulse::tools::cli::Cli;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The docs a reader follows: the README, `docs/*.md` and the chart's.
fn docs() -> Vec<(PathBuf, String)> {
    let root = Path::new(ROOT);
    let mut paths = vec![root.join("README.md"), root.join("helm/README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    paths.extend(more);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read doc");
            (p, text)
        })
        .collect()
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README.md")
}

/// A fenced code block: its language, text and first line (1-based).
struct Block {
    lang: String,
    text: String,
    line: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim().to_owned(),
                    text: String::new(),
                    line: i + 2,
                });
            }
            (Some(_), Some(_)) => found.extend(open.take()),
            (Some(block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    found
}

/// The text of the section `heading` (a `## ` or `### ` line), up to the
/// next heading of the same or a higher level.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let level = heading.split(' ').next().unwrap_or("##").len();
    let body = &text[start + heading.len() + 2..];
    let (mut at, mut in_code) = (0, false);
    for line in body.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !in_code && hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            return &body[..at];
        }
        at += line.len() + 1;
    }
    body
}

/// Splits a shell line into words: quotes group, a backslash escapes.
/// `None` at an unquoted `#` (a comment) ends it.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        _ => word.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The `cxpulse` invocations of a shell block, as words after `cxpulse`,
/// with the line each starts on: commands of pipelines, `$ ` prompts and
/// `kubectl exec … -- cxpulse …` included. In a block that is not shell,
/// only `$ ` lines are commands (the rest is output).
fn invocations(block: &Block) -> Vec<(usize, Vec<String>)> {
    let shell = matches!(block.lang.as_str(), "sh" | "bash" | "shell");
    let mut found = Vec::new();
    let mut joined = String::new();
    let mut start = 0;
    for (i, raw) in block.text.lines().enumerate() {
        let line = match raw.strip_prefix("$ ") {
            Some(command) => command,
            None if shell => raw,
            None => continue,
        };
        if joined.is_empty() {
            start = block.line + i;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            joined.push_str(cont);
            continue;
        }
        joined.push_str(line);
        let words = shell_words(&joined);
        joined.clear();
        for command in words.split(|w| w == "|" || w == "&&" || w == ";") {
            // The program: the first word after variable assignments, or
            // what `kubectl exec … --` runs.
            let program = match command.iter().position(|w| w == "--") {
                Some(dashes) if command.first().is_some_and(|w| w == "kubectl") => dashes + 1,
                _ => command.iter().take_while(|w| w.contains('=')).count(),
            };
            let is_cxpulse = command
                .get(program)
                .is_some_and(|w| w == "cxpulse" || w.ends_with("/debug/cxpulse"));
            if is_cxpulse {
                found.push((start, command[program + 1..].to_vec()));
            }
        }
    }
    found
}

/// The `cxpulse …` spans of inline code outside code blocks, as words
/// after `cxpulse`, with their line; syntax summaries (with `[`, `|` or
/// `…`) apart.
fn inline_invocations(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    let mut in_code = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        for span in line.split('`').skip(1).step_by(2) {
            let Some(args) = span.strip_prefix("cxpulse ") else {
                continue;
            };
            if args.contains(['[', '|', '…', '<']) {
                continue;
            }
            found.push((i + 1, shell_words(args)));
        }
    }
    found
}

#[test]
fn every_cxpulse_command_line_in_the_docs_parses() {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (path, text) in docs() {
        // Prose may name a command without its arguments; a command line
        // in a code block is complete.
        let mut all: Vec<(usize, Vec<String>, bool)> = inline_invocations(&text)
            .into_iter()
            .map(|(line, args)| (line, args, true))
            .collect();
        for block in blocks(&text) {
            all.extend(invocations(&block).into_iter().map(|(l, a)| (l, a, false)));
        }
        {
            for (line, args, inline) in all {
                checked += 1;
                let argv = std::iter::once("cxpulse".to_owned()).chain(args.iter().cloned());
                if let Err(e) = Cli::try_parse_from(argv) {
                    use clap::error::ErrorKind;
                    let named_only = inline && e.kind() == ErrorKind::MissingRequiredArgument;
                    if !named_only
                        && !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                    {
                        wrong.push(format!(
                            "{}:{line}: cxpulse {}: {}",
                            path.display(),
                            args.join(" "),
                            e.render().to_string().lines().next().unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The quickstart, the connect section, the guide and the runbook have
    // at least this many.
    assert!(checked >= 20, "only {checked} command lines found");
}

#[test]
fn the_command_table_lists_every_command_and_flag() {
    let readme = readme();
    let table = section(&readme, "### Command line");
    let mut missing = Vec::new();
    for command in Cli::command().get_subcommands() {
        let name = command.get_name();
        let rows: Vec<&str> = table
            .lines()
            .filter(|l| l.starts_with(&format!("| `cxpulse {name}")))
            .collect();
        if rows.is_empty() {
            missing.push(format!("no row for `cxpulse {name}`"));
            continue;
        }
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            if !rows.iter().any(|r| r.contains(&format!("--{long}"))) {
                missing.push(format!("`cxpulse {name}` row without --{long}"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// Every key of the embedded default configuration, `section.key`
/// (`kafka.properties` and `[[sources]]` apart).
fn configuration_keys() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("config/default.toml")).expect("default");
    let doc = text
        .parse::<toml_edit::DocumentMut>()
        .expect("default.toml parses");
    let mut keys = BTreeSet::new();
    for (section, item) in doc.iter() {
        let Some(table) = item.as_table() else {
            continue;
        };
        for (key, value) in table.iter() {
            if !value.is_table() {
                keys.insert(format!("{section}.{key}"));
            }
        }
    }
    keys
}

#[test]
fn the_configuration_table_lists_every_key_and_only_keys() {
    let readme = readme();
    let table = section(&readme, "### Configuration");
    let mut documented = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split(" | ").next().unwrap_or_default();
        let mut prefix = String::new();
        for key in first.split('`').skip(1).step_by(2) {
            let key = match key.strip_prefix('.') {
                Some(rest) => format!("{prefix}.{rest}"),
                None => key.to_owned(),
            };
            prefix = key.split('.').next().unwrap_or_default().to_owned();
            documented.insert(key);
        }
    }
    documented.remove("kafka.properties.*");
    let keys = configuration_keys();
    let undocumented: Vec<_> = keys.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&keys).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "not in the README's table: {undocumented:?}; in it but not a key: {unknown:?}"
    );
}

#[test]
fn every_environment_variable_in_the_docs_names_a_configuration_key() {
    let keys = configuration_keys();
    let mut wrong = Vec::new();
    for (path, text) in docs() {
        for (at, _) in text.match_indices("CXPULSE__") {
            let name: String = text[at + "CXPULSE__".len()..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let parts: Vec<&str> = name.splitn(2, "__").collect();
            let key = match parts.as_slice() {
                // The pattern itself, and `CXPULSE__TOPICS__*`.
                ["SECTION", ..] | [_] | [_, ""] => continue,
                ["KAFKA", rest] if rest.starts_with("PROPERTIES__") => continue,
                [section, key] => format!("{}.{}", section.to_lowercase(), key.to_lowercase()),
                _ => continue,
            };
            if !keys.contains(&key) {
                wrong.push(format!("{}: CXPULSE__{name}", path.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Job names whose `@gauge` series the docs may name: the bundled jobs and
/// the jobs the docs write.
fn job_names() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = std::fs::read_dir(Path::new(ROOT).join("queries"))
        .expect("queries/")
        .filter_map(|e| {
            let path = e.expect("entry").path();
            (path.extension()? == "sql").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.extend(["channel_revenue".to_owned()]);
    names
}

#[test]
fn every_metric_in_the_docs_is_exported_and_the_table_lists_every_metric() {
    let exported: BTreeSet<&str> = cxpulse::metrics::ALL.iter().copied().collect();
    let jobs = job_names();
    let mut wrong = Vec::new();
    for (path, text) in docs() {
        for (at, _) in text.match_indices("cxpulse_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let next = text[at + name.len()..].chars().next();
            // `cxpulse_<job>_…` patterns, `cxpulse_restore_*` families and
            // the test-only SQL function.
            if name.ends_with('_') || next == Some('(') || next == Some('<') {
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| exported.contains(b))
                .unwrap_or(&name);
            let gauge = jobs
                .iter()
                .any(|job| name.starts_with(&format!("cxpulse_{job}_")));
            if !exported.contains(base) && !gauge {
                wrong.push(format!("{}: {name}", path.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "not exported: {}", wrong.join("\n"));
    let readme = readme();
    let table = section(&readme, "### HTTP and metrics");
    let missing: Vec<_> = exported
        .iter()
        .filter(|name| !table.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "not in the metrics table: {missing:?}");
}

/// GitHub's anchor of a heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut inside_code = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside_code = !inside_code;
        } else if !inside_code && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn every_link_between_the_docs_resolves() {
    let mut wrong = Vec::new();
    for (path, text) in docs() {
        let dir = path.parent().expect("dir");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let link = &rest[..end];
            if link.starts_with("http") || link.contains(' ') {
                continue;
            }
            let (file, fragment) = match link.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (link, None),
            };
            let target = if file.is_empty() {
                path.clone()
            } else {
                dir.join(file)
            };
            if !target.exists() {
                wrong.push(format!("{}: {link}: no such file", path.display()));
                continue;
            }
            if let Some(fragment) = fragment {
                let text = std::fs::read_to_string(&target).unwrap_or_default();
                if !anchors(&text).contains(fragment) {
                    wrong.push(format!("{}: {link}: no such heading", path.display()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn the_connect_your_own_topics_example_loads_and_its_query_plans() {
    let readme = readme();
    let connect = section(&readme, "## Connect your own topics");
    let blocks = blocks(connect);
    let toml: Vec<&Block> = blocks.iter().filter(|b| b.lang == "toml").collect();
    let sql: Vec<&Block> = blocks.iter().filter(|b| b.lang == "sql").collect();
    assert!(
        toml.len() >= 2 && sql.len() == 1,
        "the cluster, the sources, one query"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("clicks_by_channel.sql"), &sql[0].text).expect("write query");
    // The cluster and the sources, as one `my.toml`, over the queries.
    let mut file = format!(
        "[engine]\nqueries_dir = {:?}\n",
        dir.path().display().to_string()
    );
    for block in &toml {
        file.push_str(&block.text);
    }
    let path = dir.path().join("my.toml");
    std::fs::write(&path, file).expect("write config");
    let report = cxpulse::tools::check::check(Some(&path)).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        report.jobs,
        [(
            "clicks_by_channel".to_owned(),
            "cx.metrics.clicks_by_channel".to_owned()
        )]
    );
}
