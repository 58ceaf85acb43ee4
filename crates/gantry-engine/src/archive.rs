//! Zip archives of job files (artifacts and caches): selection by
//! `paths`/`exclude`/`untracked`, writing, and safe extraction (no entry
//! may land outside the destination: zip-slip, absolute paths, symlinks
//! pointing out).

use crate::glob::{GlobSet, all_files};
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// What to archive from a job's directory.
pub struct Selection<'a> {
    pub paths: &'a [String],
    pub exclude: &'a [String],
    pub untracked: bool,
    /// Files of the commit, to tell untracked ones.
    pub tracked: &'a HashSet<PathBuf>,
    /// The job's `CI_PROJECT_DIR`, stripped from absolute patterns.
    pub ci_project_dir: &'a str,
}

/// Selected files (relative, sorted) and warnings for rejected patterns.
pub fn select(base: &Path, sel: &Selection) -> (Vec<PathBuf>, Vec<String>) {
    let mut warnings = Vec::new();
    let (paths, rejected) = GlobSet::new(sel.paths, sel.ci_project_dir);
    for r in rejected {
        warnings.push(format!(
            "path `{r}` is outside the project directory, ignored"
        ));
    }
    let mut files: Vec<PathBuf> = paths.collect(base);
    if sel.untracked {
        files.extend(
            all_files(base)
                .into_iter()
                .filter(|f| !sel.tracked.contains(f)),
        );
    }
    if !sel.exclude.is_empty() {
        let (exclude, _) = GlobSet::new(sel.exclude, sel.ci_project_dir);
        files.retain(|f| {
            !f.ancestors()
                .any(|a| !a.as_os_str().is_empty() && exclude.matches(a))
        });
    }
    files.sort();
    files.dedup();
    (files, warnings)
}

/// Writes `files` (relative to `base`) into a new zip at `dest`, atomically.
/// Returns the number of entries.
pub fn write_zip(base: &Path, files: &[PathBuf], dest: &Path) -> io::Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    use zip::write::SimpleFileOptions;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
    let file = std::fs::File::create(&tmp)?;
    let mut zip = zip::ZipWriter::new(io::BufWriter::new(file));
    let mut count = 0;
    let mut buf = Vec::new();
    for rel in files {
        let Some(name) = rel.to_str() else { continue };
        let full = base.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&full) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(1))
            .unix_permissions(mode);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full)?;
            zip.add_symlink(name, target.to_string_lossy(), opts)
                .map_err(io::Error::other)?;
        } else if meta.is_dir() {
            zip.add_directory(name, opts).map_err(io::Error::other)?;
        } else {
            zip.start_file(name, opts).map_err(io::Error::other)?;
            buf.clear();
            std::fs::File::open(&full)?.read_to_end(&mut buf)?;
            zip.write_all(&buf)?;
        }
        count += 1;
    }
    zip.finish().map_err(io::Error::other)?.flush()?;
    std::fs::rename(&tmp, dest)?;
    Ok(count)
}

/// Symlinks among `files` (relative to `base`) that point out of `base`
/// (absolute, or up past the root, like a virtualenv's `bin/python`): they
/// are archived as they are, but [`extract_zip`] refuses them when a job
/// downloads the artifacts. One warning each, for the upload.
pub fn outside_links(base: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut warnings = Vec::new();
    for rel in files {
        let Ok(target) = std::fs::read_link(base.join(rel)) else {
            continue;
        };
        if !link_stays_inside(rel, &target) {
            warnings.push(format!(
                "`{}` is a symlink to `{}`, outside the project: it is uploaded, but jobs that \
                 download these artifacts will refuse it (make the link relative, or leave it out)",
                rel.display(),
                target.display()
            ));
        }
    }
    warnings
}

/// Which symlinks [`extract_zip_with`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// Only links that resolve inside the destination (artifacts, which
    /// come from another job).
    Inside,
    /// Any target (caches, which this repository's own jobs wrote, e.g. a
    /// virtualenv's absolute `bin/python`). Nothing is ever written through
    /// a link that leaves the destination.
    Any,
}

/// Extracts a zip into `dest`. Entries whose names leave `dest`, and
/// symlinks pointing outside it, are refused. Returns the number of entries.
pub fn extract_zip(zip_path: &Path, dest: &Path) -> io::Result<usize> {
    extract_zip_with(zip_path, dest, Links::Inside)
}

/// [`extract_zip`] with a choice of accepted symlinks.
pub fn extract_zip_with(zip_path: &Path, dest: &Path, links: Links) -> io::Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(zip_path)?;
    let mut archive = zip::ZipArchive::new(io::BufReader::new(file)).map_err(io::Error::other)?;
    std::fs::create_dir_all(dest)?;
    let root = dest.canonicalize()?;
    let mut count = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(io::Error::other)?;
        let Some(rel) = entry.enclosed_name() else {
            return Err(io::Error::other(format!(
                "refusing archive entry `{}`: it leaves the destination",
                entry.name()
            )));
        };
        let out = root.join(&rel);
        // Never write through a link that leaves the destination (one from
        // an earlier entry, accepted with `Links::Any`).
        if std::fs::symlink_metadata(&out).is_ok_and(|m| m.file_type().is_symlink())
            && !entry.is_symlink()
        {
            std::fs::remove_file(&out)?;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
            // A symlinked parent (from an earlier entry) must stay inside.
            if !parent.canonicalize()?.starts_with(&root) {
                return Err(io::Error::other(format!(
                    "refusing archive entry `{}`: its directory is a link out of the destination",
                    entry.name()
                )));
            }
        }
        if entry.is_dir() {
            std::fs::create_dir_all(&out)?;
        } else if entry.is_symlink() {
            let mut target = String::new();
            entry.read_to_string(&mut target)?;
            if links == Links::Inside && !link_stays_inside(&rel, Path::new(&target)) {
                return Err(io::Error::other(format!(
                    "refusing symlink `{}` -> `{target}`: it points out of the destination",
                    entry.name()
                )));
            }
            let _ = std::fs::remove_file(&out);
            std::os::unix::fs::symlink(&target, &out)?;
        } else {
            let _ = std::fs::remove_file(&out);
            let mut f = std::fs::File::create(&out)?;
            io::copy(&mut entry, &mut f)?;
            if let Some(mode) = entry.unix_mode() {
                std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
        }
        count += 1;
    }
    Ok(count)
}

/// Whether a relative symlink at `rel` with `target` resolves inside the root.
fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Failed test cases of JUnit XML reports: `classname.name` or `name`.
pub fn junit_failures(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<testcase") {
        rest = &rest[start + "<testcase".len()..];
        let Some(tag_end) = rest.find('>') else { break };
        let tag = &rest[..tag_end];
        let self_closing = tag.trim_end().ends_with('/');
        let name = xml_attr(tag, "name").unwrap_or_default();
        let class = xml_attr(tag, "classname").unwrap_or_default();
        let body_end = if self_closing {
            0
        } else {
            rest.find("</testcase>").unwrap_or(rest.len())
        };
        let body = &rest[tag_end..body_end.max(tag_end)];
        if !self_closing && (body.contains("<failure") || body.contains("<error")) {
            out.push(if class.is_empty() {
                name
            } else {
                format!("{class}.{name}")
            });
        }
        rest = &rest[body_end.max(tag_end)..];
    }
    out
}

fn xml_attr(tag: &str, key: &str) -> Option<String> {
    let mut search = tag;
    loop {
        let at = search.find(key)?;
        let before_ok = at == 0 || search.as_bytes()[at - 1].is_ascii_whitespace();
        let after = search[at + key.len()..].trim_start();
        if before_ok && let Some(after_eq) = after.strip_prefix('=') {
            let after_eq = after_eq.trim_start();
            let quote = after_eq.chars().next()?;
            if quote == '"' || quote == '\'' {
                let value = &after_eq[1..];
                let end = value.find(quote)?;
                return Some(xml_unescape(&value[..end]));
            }
        }
        search = &search[at + key.len()..];
    }
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_roundtrip_keeps_modes_and_links() {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            src.path().join("d/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("run.sh", src.path().join("d/link")).unwrap();
        let zip = src.path().join("out/a.zip");
        let files = vec![PathBuf::from("d/link"), PathBuf::from("d/run.sh")];
        assert_eq!(write_zip(src.path(), &files, &zip).unwrap(), 2);
        let dst = tempfile::tempdir().unwrap();
        assert_eq!(extract_zip(&zip, dst.path()).unwrap(), 2);
        let mode = std::fs::metadata(dst.path().join("d/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(dst.path().join("d/link")).unwrap(),
            PathBuf::from("run.sh")
        );
    }

    #[test]
    fn zip_slip_is_refused() {
        use zip::write::SimpleFileOptions;
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("evil.zip");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        z.start_file("../../escaped.txt", SimpleFileOptions::default())
            .unwrap();
        z.write_all(b"x").unwrap();
        z.finish().unwrap();
        let dst = dir.path().join("dst");
        assert!(extract_zip(&zip_path, &dst).is_err());
        assert!(!dir.path().join("escaped.txt").exists());

        let zip_path = dir.path().join("link.zip");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        z.add_symlink("l", "../../etc", SimpleFileOptions::default())
            .unwrap();
        z.finish().unwrap();
        assert!(extract_zip(&zip_path, &dst).is_err());
    }

    #[test]
    fn junit_failed_cases() {
        let xml = r#"<?xml version="1.0"?>
<testsuites><testsuite name="s">
  <testcase classname="math" name="adds" time="0.1"/>
  <testcase classname="math" name="divides"><failure message="boom">x</failure></testcase>
  <testcase name="io &amp; net"><error type="E"/></testcase>
  <testcase classname="ok" name="passes"></testcase>
</testsuite></testsuites>"#;
        assert_eq!(junit_failures(xml), vec!["math.divides", "io & net"]);
    }

    #[test]
    fn selection_with_exclude_and_untracked() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path();
        std::fs::create_dir_all(b.join("out")).unwrap();
        std::fs::write(b.join("out/a.bin"), "a").unwrap();
        std::fs::write(b.join("out/a.tmp"), "t").unwrap();
        std::fs::write(b.join("tracked.txt"), "t").unwrap();
        std::fs::write(b.join("new.txt"), "n").unwrap();
        let tracked: HashSet<PathBuf> = [PathBuf::from("tracked.txt")].into();
        let paths = vec!["out/".to_string()];
        let exclude = vec!["**/*.tmp".to_string()];
        let (files, _) = select(
            b,
            &Selection {
                paths: &paths,
                exclude: &exclude,
                untracked: true,
                tracked: &tracked,
                ci_project_dir: "/x",
            },
        );
        assert_eq!(
            files,
            vec![PathBuf::from("new.txt"), PathBuf::from("out/a.bin")]
        );
    }
}
