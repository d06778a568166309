//! Parsing Codex's patch format into file operations. No IO here.
//!
//! ```text
//! *** Begin Patch
//! *** Add File: path        followed by lines starting with `+`
//! *** Delete File: path
//! *** Update File: path     optionally followed by `*** Move to: path`, then chunks:
//! @@ [context line]         lines starting with ` ` (context), `-` (old) or `+` (new),
//!                           optionally ending with `*** End of File`
//! *** End Patch
//! ```

use std::path::PathBuf;

use super::PatchError;

const BEGIN_PATCH: &str = "*** Begin Patch";
const END_PATCH: &str = "*** End Patch";
const ADD_FILE: &str = "*** Add File: ";
const DELETE_FILE: &str = "*** Delete File: ";
const UPDATE_FILE: &str = "*** Update File: ";
const MOVE_TO: &str = "*** Move to: ";
const END_OF_FILE: &str = "*** End of File";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileOp {
    Add {
        path: PathBuf,
        contents: String,
    },
    Delete {
        path: PathBuf,
    },
    Update {
        path: PathBuf,
        move_to: Option<PathBuf>,
        chunks: Vec<Chunk>,
    },
}

/// One `@@` section of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// The line after `@@ `: a line (usually a function or class header) that occurs before
    /// the changed lines, to narrow down where they are.
    pub(crate) context: Option<String>,
    pub(crate) old_lines: Vec<String>,
    pub(crate) new_lines: Vec<String>,
    /// For each new line that is a context line, its index in `old_lines`: the file's own
    /// version of that line is kept, so fuzzy matching never rewrites context.
    pub(crate) context_of_new: Vec<Option<usize>>,
    /// The old lines are at the end of the file.
    pub(crate) at_end_of_file: bool,
    /// Line of the patch where this chunk starts (1-based), for error messages.
    pub(crate) patch_line: usize,
}

impl Chunk {
    fn push_context(&mut self, line: &str) {
        self.context_of_new.push(Some(self.old_lines.len()));
        self.old_lines.push(line.to_owned());
        self.new_lines.push(line.to_owned());
    }
}

fn malformed(line: usize, message: impl Into<String>) -> PatchError {
    PatchError::Malformed {
        line,
        message: message.into(),
    }
}

/// Parses a whole patch. Lines are numbered from 1 as in the text given.
pub(crate) fn parse_patch(patch: &str) -> Result<Vec<FileOp>, PatchError> {
    let lines: Vec<&str> = patch.lines().collect();
    let first = lines
        .iter()
        .position(|line| !line.trim().is_empty())
        .ok_or_else(|| {
            malformed(
                1,
                "the patch is empty; it must start with `*** Begin Patch`",
            )
        })?;
    let last = lines
        .iter()
        .rposition(|line| !line.trim().is_empty())
        .unwrap_or(first);
    if lines[first].trim() != BEGIN_PATCH {
        return Err(malformed(
            first + 1,
            format!(
                "the first line must be `{BEGIN_PATCH}`, found `{}`",
                lines[first].trim()
            ),
        ));
    }
    if last == first || lines[last].trim() != END_PATCH {
        return Err(malformed(
            last + 1,
            format!(
                "the last line must be `{END_PATCH}`, found `{}`",
                lines[last].trim()
            ),
        ));
    }

    let mut parser = Parser {
        lines: &lines,
        index: first + 1,
        end: last,
    };
    let mut ops = Vec::new();
    while parser.index < parser.end {
        if parser.current().trim().is_empty() {
            parser.index += 1;
            continue;
        }
        ops.push(parser.file_op()?);
    }
    if ops.is_empty() {
        return Err(malformed(
            last + 1,
            "the patch contains no file operation (`*** Add File:`, `*** Delete File:` or `*** Update File:`)",
        ));
    }
    Ok(ops)
}

struct Parser<'a> {
    lines: &'a [&'a str],
    /// Index of the next line to read.
    index: usize,
    /// Index of the `*** End Patch` line.
    end: usize,
}

impl<'a> Parser<'a> {
    fn current(&self) -> &'a str {
        self.lines[self.index]
    }

    fn line_number(&self) -> usize {
        self.index + 1
    }

    fn path_after<'l>(&self, line: &'l str, marker: &str) -> Result<Option<&'l str>, PatchError> {
        let Some(path) = line.strip_prefix(marker) else {
            return Ok(None);
        };
        let path = path.trim();
        if path.is_empty() {
            return Err(malformed(
                self.line_number(),
                format!("`{}` needs a path", marker.trim()),
            ));
        }
        Ok(Some(path))
    }

    fn file_op(&mut self) -> Result<FileOp, PatchError> {
        let header = self.current().trim();
        if let Some(path) = self.path_after(header, ADD_FILE)? {
            let path = PathBuf::from(path);
            self.index += 1;
            let mut contents = String::new();
            while self.index < self.end {
                let Some(line) = self.current().strip_prefix('+') else {
                    break;
                };
                contents.push_str(line);
                contents.push('\n');
                self.index += 1;
            }
            return Ok(FileOp::Add { path, contents });
        }
        if let Some(path) = self.path_after(header, DELETE_FILE)? {
            self.index += 1;
            return Ok(FileOp::Delete {
                path: PathBuf::from(path),
            });
        }
        if let Some(path) = self.path_after(header, UPDATE_FILE)? {
            let header_line = self.line_number();
            let path = PathBuf::from(path);
            self.index += 1;
            let mut move_to = None;
            if self.index < self.end {
                let line = self.current().trim();
                if let Some(target) = self.path_after(line, MOVE_TO)? {
                    move_to = Some(PathBuf::from(target));
                    self.index += 1;
                }
            }
            let mut chunks = Vec::new();
            while self.index < self.end {
                let line = self.current();
                if line.trim().is_empty() {
                    self.index += 1;
                    continue;
                }
                if line.starts_with("***") {
                    break;
                }
                chunks.push(self.chunk(chunks.is_empty())?);
            }
            if chunks.is_empty() && move_to.is_none() {
                return Err(malformed(
                    header_line,
                    format!("`*** Update File: {}` has no changes", path.display()),
                ));
            }
            return Ok(FileOp::Update {
                path,
                move_to,
                chunks,
            });
        }
        Err(malformed(
            self.line_number(),
            format!(
                "`{header}` is not a file operation; expected `*** Add File: <path>`, \
                 `*** Delete File: <path>` or `*** Update File: <path>`"
            ),
        ))
    }

    fn chunk(&mut self, first_of_file: bool) -> Result<Chunk, PatchError> {
        let patch_line = self.line_number();
        let line = self.current();
        let context = if line.trim_end() == "@@" {
            self.index += 1;
            None
        } else if let Some(context) = line.strip_prefix("@@ ") {
            self.index += 1;
            Some(context.to_owned())
        } else if first_of_file {
            // The first chunk of a file may start directly with diff lines.
            None
        } else {
            return Err(malformed(
                patch_line,
                format!("expected a chunk header `@@` or `@@ <context line>`, found `{line}`"),
            ));
        };
        let mut chunk = Chunk {
            context,
            old_lines: Vec::new(),
            new_lines: Vec::new(),
            context_of_new: Vec::new(),
            at_end_of_file: false,
            patch_line,
        };
        let mut diff_lines = 0;
        while self.index < self.end {
            let line = self.current();
            if line.trim_end() == END_OF_FILE {
                self.index += 1;
                chunk.at_end_of_file = true;
                break;
            }
            match line.chars().next() {
                // An empty line is an empty context line whose leading space got stripped.
                None => chunk.push_context(""),
                Some(' ') => chunk.push_context(&line[1..]),
                Some('-') => chunk.old_lines.push(line[1..].to_owned()),
                Some('+') => {
                    chunk.new_lines.push(line[1..].to_owned());
                    chunk.context_of_new.push(None);
                }
                Some(_) if diff_lines > 0 => break,
                Some(_) => {
                    return Err(malformed(
                        self.line_number(),
                        format!(
                            "unexpected line `{line}` in a chunk: every line must start with \
                             ` ` (context), `-` (removed) or `+` (added)"
                        ),
                    ));
                }
            }
            diff_lines += 1;
            self.index += 1;
        }
        if diff_lines == 0 {
            return Err(malformed(patch_line, "the chunk has no lines"));
        }
        Ok(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(patch: &str) -> (usize, String) {
        match parse_patch(patch) {
            Err(PatchError::Malformed { line, message }) => (line, message),
            other => panic!("expected a malformed-patch error, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_operation() {
        let ops = parse_patch(
            "*** Begin Patch\n\
             *** Add File: a.txt\n\
             +one\n\
             +two\n\
             *** Delete File: b.txt\n\
             *** Update File: c.txt\n\
             *** Move to: d.txt\n\
             @@ fn main()\n \
             keep\n\
             -old\n\
             +new\n\
             *** End of File\n\
             *** End Patch\n",
        )
        .expect("valid patch");
        assert_eq!(
            ops,
            vec![
                FileOp::Add {
                    path: "a.txt".into(),
                    contents: "one\ntwo\n".into()
                },
                FileOp::Delete {
                    path: "b.txt".into()
                },
                FileOp::Update {
                    path: "c.txt".into(),
                    move_to: Some("d.txt".into()),
                    chunks: vec![Chunk {
                        context: Some("fn main()".into()),
                        old_lines: vec!["keep".into(), "old".into()],
                        new_lines: vec!["keep".into(), "new".into()],
                        context_of_new: vec![Some(0), None],
                        at_end_of_file: true,
                        patch_line: 8,
                    }],
                },
            ]
        );
    }

    #[test]
    fn first_chunk_may_omit_the_header() {
        let ops =
            parse_patch("*** Begin Patch\n*** Update File: f\n import x\n+import y\n*** End Patch")
                .expect("valid patch");
        let FileOp::Update { chunks, .. } = &ops[0] else {
            panic!("expected an update: {ops:?}");
        };
        assert_eq!(chunks[0].old_lines, vec!["import x"]);
        assert_eq!(chunks[0].new_lines, vec!["import x", "import y"]);
    }

    #[test]
    fn malformed_patches_name_the_line() {
        assert_eq!(error_of("hello\n").0, 1);
        let (line, message) = error_of("*** Begin Patch\n*** Add File: a\n+x\n");
        assert_eq!(line, 3);
        assert!(message.contains("*** End Patch"), "{message}");
        let (line, message) = error_of("*** Begin Patch\n*** Frobnicate: a\n*** End Patch");
        assert_eq!(line, 2);
        assert!(message.contains("not a file operation"), "{message}");
        let (line, message) = error_of(
            "*** Begin Patch\n*** Update File: a\n@@\n-x\n+y\n@@\nbad line\n*** End Patch",
        );
        assert_eq!(line, 7);
        assert!(message.contains("unexpected line `bad line`"), "{message}");
        let (line, _) = error_of("*** Begin Patch\n*** Update File: a\n*** End Patch");
        assert_eq!(line, 2);
    }
}
