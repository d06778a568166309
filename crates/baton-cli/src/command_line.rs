//! Keeps database passwords out of this process's command line as others read it
//! (`/proc/PID/cmdline`, `ps`): any local user can read it, and so can a command the model
//! runs, which may then show it to the model. `--store postgres://user:PASSWORD@…` and
//! `sessions migrate --to …` would put it there; as psql and mysql do, baton overwrites it
//! once the arguments are parsed. `PGPASSWORD` or `~/.pgpass` keep it off the command line
//! from the start.

/// Overwrites with `*`, in the memory `/proc/self/cmdline` shows, every password that a
/// `postgres://` URL among the arguments holds. Call it after parsing the arguments and
/// before starting any thread or child process (they would copy the unmasked text).
pub fn hide_database_passwords() {
    let secrets: Vec<String> = std::env::args_os()
        .filter_map(|arg| arg.into_string().ok())
        .flat_map(|arg| {
            let url = baton_store::DATABASE_URL_SCHEMES
                .iter()
                .filter_map(|scheme| arg.find(scheme))
                .min()
                .map(|at| arg[at..].to_owned());
            url.map(|url| {
                baton_store_pg::passwords_in_url(&url)
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
        })
        .collect();
    if secrets.is_empty() {
        return;
    }
    let Some((start, end)) = command_line_bounds() else {
        return;
    };
    // SAFETY: [start, end) is this process's argument strings on its initial stack, as the
    // kernel reports them (`arg_start`, `arg_end` in /proc/self/stat): memory of this process,
    // writable, alive until exit. No Rust reference points into it (std reads it afresh when
    // `env::args` is called, and would then see the masked text), and no other thread runs yet.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, end - start) };
    for secret in &secrets {
        mask_all(area, secret.as_bytes());
    }
}

/// Replaces every occurrence of `secret` in `area` by as many `*`.
fn mask_all(area: &mut [u8], secret: &[u8]) {
    if secret.is_empty() || secret.len() > area.len() {
        return;
    }
    let mut at = 0;
    while at + secret.len() <= area.len() {
        if &area[at..at + secret.len()] == secret {
            area[at..at + secret.len()].fill(b'*');
            at += secret.len();
        } else {
            at += 1;
        }
    }
}

/// Where the argument strings are: fields 48 and 49 of /proc/self/stat.
fn command_line_bounds() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is field 3.
    let start: usize = fields.get(48 - 3)?.parse().ok()?;
    let end: usize = fields.get(49 - 3)?.parse().ok()?;
    (start != 0 && end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_is_masked_and_nothing_else() {
        let mut area = b"baton\0--store\0postgres://u:pw@h/db\0--to=pw\0".to_vec();
        mask_all(&mut area, b"pw");
        assert_eq!(area, b"baton\0--store\0postgres://u:**@h/db\0--to=**\0");
    }

    #[test]
    fn the_bounds_of_this_process_command_line_hold_its_arguments() {
        let (start, end) = command_line_bounds().expect("bounds");
        // SAFETY: as in `hide_database_passwords`, read only.
        let area = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) };
        let first = std::env::args().next().expect("argv[0]");
        assert!(area.starts_with(first.as_bytes()));
    }
}
