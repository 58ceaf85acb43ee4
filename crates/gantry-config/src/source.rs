//! Source files and positions. Every node the loader produces points back to
//! the file, line and column it came from, so errors can show a caret.

use std::sync::Arc;

/// Index of a file in a [`Sources`] table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A position in a source file. Lines and columns are 1-based; `offset` is a
/// byte offset into the file text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub line: u32,
    pub col: u32,
    pub offset: u32,
}

impl Span {
    pub fn new(file: FileId, line: u32, col: u32, offset: u32) -> Self {
        Span {
            file,
            line,
            col,
            offset,
        }
    }
}

/// One loaded file: its display name (relative to the project when local)
/// and its text.
#[derive(Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// Every file that took part in building a configuration. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    files: Vec<Arc<SourceFile>>,
}

impl Sources {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        self.files.push(Arc::new(SourceFile {
            name: name.into(),
            text: text.into(),
        }));
        FileId(self.files.len() as u32 - 1)
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize).map(|f| f.as_ref())
    }

    pub fn name(&self, id: FileId) -> &str {
        self.get(id).map(|f| f.name.as_str()).unwrap_or("<unknown>")
    }

    /// The text of 1-based line `line` of file `id`, without its newline.
    pub fn line(&self, id: FileId, line: u32) -> Option<&str> {
        let file = self.get(id)?;
        file.text.lines().nth(line.checked_sub(1)? as usize)
    }
}
