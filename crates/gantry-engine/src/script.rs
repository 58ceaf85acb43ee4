//! The shell scripts a job runs, as gitlab-runner's bash shell writes
//! them: `set -e` (and `pipefail` where the shell has it), then for each
//! command a `$ command` line in the log followed by the command itself, so
//! the first failing command fails the job.

/// `set -e`, and `pipefail` where the shell has it: bash is known to (no
/// subshell, so no extra fork per job); other shells are probed in one.
const PRELUDE: &str = "set -e
if [ -n \"${BASH_VERSION:-}\" ]; then set -o pipefail
elif (set -o pipefail) 2>/dev/null; then set -o pipefail
fi
set +o noclobber
";

/// `before_script` + `script` as one script (the `step_script` stage).
pub fn step_script(before_script: &[String], script: &[String]) -> String {
    build(before_script.iter().chain(script.iter()))
}

/// `after_script` as its own script.
pub fn after_script(after_script: &[String]) -> String {
    build(after_script.iter())
}

fn build<'a>(commands: impl Iterator<Item = &'a String>) -> String {
    let mut out = String::from(PRELUDE);
    for cmd in commands {
        let shown = match cmd.trim_end().split_once('\n') {
            Some((first, _)) => format!("$ {first} # collapsed multi-line command"),
            None => format!("$ {}", cmd.trim_end()),
        };
        out.push_str("printf '%s\\n' ");
        out.push_str(&shell_quote(&shown));
        out.push('\n');
        out.push_str(cmd);
        if !cmd.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Single-quotes a string for POSIX shells.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_then_runs_each_command() {
        let s = step_script(&["echo 'a'".into()], &["false\necho x".into()]);
        assert!(s.starts_with("set -e\n"));
        assert!(s.contains("printf '%s\\n' '$ echo '\\''a'\\'''\necho 'a'\n"));
        assert!(s.contains("'$ false # collapsed multi-line command'\nfalse\necho x\n"));
    }
}
