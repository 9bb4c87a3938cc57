//! `fluxgate manifest get|set`: try a YAML path on a real file, edited exactly as the
//! operator would edit it in Git.

use crate::manifest::{self, DocSelector, ValueFormat, YamlPath};
use anyhow::Context as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Read or change a version field in a YAML file.
#[derive(Debug, clap::Args)]
pub struct ManifestArgs {
    #[command(subcommand)]
    pub command: ManifestCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ManifestCommand {
    /// Print the value at PATH (e.g. `.spec.chart.spec.version`).
    Get(GetArgs),
    /// Replace the value at PATH with VALUE, changing only that value's bytes; prints the
    /// new file unless `--write` is given.
    Set(SetArgs),
}

/// Where the field is: shared by `get` and `set`.
#[derive(Debug, clap::Args)]
pub struct FieldArgs {
    /// The YAML file.
    pub file: PathBuf,
    /// YAML path: `.a.b`, `[0]`, `['key.with.dots']`, `[name=foo]`
    /// (e.g. `.spec.template.spec.containers[0].image`).
    pub path: String,
    /// The document to use when the file holds several: `Kind/name` (e.g.
    /// `HelmRelease/podinfo`) or a 0-based index.
    #[arg(long, value_name = "KIND/NAME")]
    pub doc: Option<String>,
    /// The field holds an image reference (`registry/name:tag`); the version is its tag
    /// (and `@digest`).
    #[arg(long)]
    pub image: bool,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub field: FieldArgs,
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    #[command(flatten)]
    pub field: FieldArgs,
    /// The new value (with `--image`: the new tag, `TAG` or `TAG@sha256:…`).
    pub value: String,
    /// Write the file in place instead of printing the result.
    #[arg(long)]
    pub write: bool,
}

/// Runs `fluxgate manifest …`; every error names the file.
pub fn run(args: &ManifestArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    match &args.command {
        ManifestCommand::Get(get) => {
            let file = &get.field.file;
            let value = get_value(&get.field).with_context(|| file.display().to_string())?;
            writeln!(stdout.lock(), "{value}").context("writing to stdout")?;
        }
        ManifestCommand::Set(set) => {
            let file = &set.field.file;
            let outcome = set_value(set).with_context(|| file.display().to_string())?;
            match outcome {
                SetOutcome::Print(text) => {
                    stdout
                        .lock()
                        .write_all(text.as_bytes())
                        .context("writing to stdout")?;
                }
                SetOutcome::Written { old, new } => {
                    let path = &set.field.path;
                    writeln!(stderr.lock(), "{}: {path}: {old} -> {new}", file.display())
                        .context("writing to stderr")?;
                }
                SetOutcome::Unchanged { value } => {
                    let path = &set.field.path;
                    writeln!(
                        stderr.lock(),
                        "{}: {path} is already {value}; file not written",
                        file.display()
                    )
                    .context("writing to stderr")?;
                }
            }
        }
    }
    Ok(())
}

/// What `set` did.
enum SetOutcome {
    Print(String),
    Written { old: String, new: String },
    Unchanged { value: String },
}

/// The file's text and the parsed path and selector.
struct Field {
    text: String,
    path: YamlPath,
    doc: Option<DocSelector>,
    format: ValueFormat,
}

fn read_field(args: &FieldArgs) -> anyhow::Result<Field> {
    let bytes = std::fs::read(&args.file).context("cannot read the file")?;
    let text = manifest::text_from_bytes(&bytes)?.to_owned();
    let path = YamlPath::parse(&args.path)?;
    let doc = args.doc.as_deref().map(DocSelector::parse).transpose()?;
    let format = if args.image {
        ValueFormat::Image
    } else {
        ValueFormat::Plain
    };
    Ok(Field {
        text,
        path,
        doc,
        format,
    })
}

fn get_value(args: &FieldArgs) -> anyhow::Result<String> {
    let field = read_field(args)?;
    Ok(manifest::get_version(
        &field.text,
        field.doc.as_ref(),
        &field.path,
        field.format,
    )?)
}

fn set_value(args: &SetArgs) -> anyhow::Result<SetOutcome> {
    let field = read_field(&args.field)?;
    let edit = manifest::set(
        &field.text,
        field.doc.as_ref(),
        &field.path,
        &args.value,
        field.format,
    )?;
    if !args.write {
        return Ok(SetOutcome::Print(edit.text));
    }
    if !edit.changed() {
        return Ok(SetOutcome::Unchanged { value: edit.new });
    }
    write_in_place(&args.field.file, &edit.text)?;
    Ok(SetOutcome::Written {
        old: edit.old,
        new: edit.new,
    })
}

/// Replaces the file atomically (temporary file in the same directory, then rename), keeping
/// its permissions, so an interrupted write never leaves half a manifest. A symlink is
/// followed, so the link stays a link.
fn write_in_place(file: &Path, text: &str) -> anyhow::Result<()> {
    let file = std::fs::canonicalize(file).context("cannot resolve the file's path")?;
    let file = file.as_path();
    let name = file
        .file_name()
        .context("the path has no file name")?
        .to_string_lossy();
    let temporary = file.with_file_name(format!(".{name}.fluxgate-{}.tmp", std::process::id()));
    let permissions = std::fs::metadata(file)
        .context("cannot read the file's permissions")?
        .permissions();
    let written = std::fs::write(&temporary, text)
        .and_then(|()| std::fs::set_permissions(&temporary, permissions))
        .and_then(|()| std::fs::rename(&temporary, file));
    if let Err(err) = written {
        // Best effort: the temporary file is ours and useless after a failure.
        let _ = std::fs::remove_file(&temporary);
        return Err(err).context("cannot write the file");
    }
    Ok(())
}
