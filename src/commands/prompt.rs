//! The password prompt of `herald app hash-password`: asked twice at the terminal, without
//! echo. Echo comes back however the prompt ends — an answer, an error, or a signal (Ctrl-C,
//! Ctrl-\, a hang-up or SIGTERM), which would otherwise kill herald with the terminal left
//! silent.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;

use super::UsageError;

/// Asks for a password twice at the terminal, without echo.
pub(super) fn password_twice() -> anyhow::Result<String> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| anyhow::anyhow!("cannot open the terminal /dev/tty: {e}"))?;
    // Echo goes off before the first prompt is written, so nothing typed after a prompt
    // appears can be shown; the guard turns it back on however this function returns.
    let _echo_off = EchoOff::new(&tty)?;
    let mut lines = std::io::BufReader::new(&tty);
    let first = ask(&mut lines, "Password: ")?;
    if first.is_empty() {
        return Err(UsageError("empty password".into()).into());
    }
    let again = ask(&mut lines, "Again: ")?;
    if first != again {
        return Err(UsageError("the two passwords differ".into()).into());
    }
    Ok(first)
}

/// Writes `prompt` to the terminal and reads one line (without its line ending) from it.
fn ask(lines: &mut std::io::BufReader<&std::fs::File>, prompt: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, Write};
    let mut tty = *lines.get_ref();
    tty.write_all(prompt.as_bytes())?;
    tty.flush()?;
    let mut line = String::new();
    if lines.read_line(&mut line)? == 0 {
        return Err(UsageError("no password typed (end of input)".into()).into());
    }
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_string())
}

/// Terminal echo switched off for as long as this lives (the newline still echoes, so the
/// cursor moves on after each answer); the previous settings come back on drop, or from a
/// signal handler if a signal ends the process first.
struct EchoOff<'a> {
    tty: &'a std::fs::File,
    saved: libc::termios,
    /// The handlers in place before ours, put back on drop.
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

/// The signals that end a process at a prompt by default.
const ENDING_SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM];

/// The terminal and its settings before the prompt, for the signal handler (set once: a
/// process prompts once).
static SAVED_TERMINAL: OnceLock<(RawFd, libc::termios)> = OnceLock::new();

/// Restores the terminal, then lets `signal` end the process as it would have (the shell sees
/// "killed by SIGINT"). Only async-signal-safe calls: tcsetattr, sigaction, raise.
extern "C" fn restore_terminal_then_die(signal: libc::c_int) {
    if let Some((fd, saved)) = SAVED_TERMINAL.get() {
        // SAFETY: tcsetattr with settings read from this terminal before the prompt.
        unsafe { libc::tcsetattr(*fd, libc::TCSANOW, saved) };
    }
    // SAFETY: a zeroed sigaction is SIG_DFL with no flags; then the default action runs.
    unsafe {
        let default: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, &default, std::ptr::null_mut());
        libc::raise(signal);
    }
}

impl<'a> EchoOff<'a> {
    fn new(tty: &'a std::fs::File) -> anyhow::Result<Self> {
        let fd = tty.as_raw_fd();
        // SAFETY: `fd` stays open while the guard lives (it borrows `tty`), and `saved` is
        // plain data that tcgetattr fills in completely.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(anyhow::anyhow!(
                "cannot read the terminal settings: {}",
                std::io::Error::last_os_error()
            ));
        }
        let _ = SAVED_TERMINAL.set((fd, saved));
        let previous = catch_ending_signals()?;
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: as above; `quiet` is a copy of valid settings with two flags changed.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
            return Err(anyhow::anyhow!(
                "cannot turn terminal echo off: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(EchoOff {
            tty,
            saved,
            previous,
        })
    }
}

/// Installs [`restore_terminal_then_die`] for [`ENDING_SIGNALS`]; returns the handlers it
/// replaced. A signal ignored when herald started (`nohup`, a background job of a script)
/// stays ignored, as a shell leaves it.
fn catch_ending_signals() -> anyhow::Result<Vec<(libc::c_int, libc::sigaction)>> {
    let mut previous = Vec::with_capacity(ENDING_SIGNALS.len());
    for signal in ENDING_SIGNALS {
        // SAFETY: plain-data structs filled in by sigaction/sigemptyset; the handler only
        // makes async-signal-safe calls.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                return Err(anyhow::anyhow!(
                    "cannot read the handler of signal {signal}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            if old.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = restore_terminal_then_die as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(anyhow::anyhow!(
                    "cannot catch signal {signal} during the prompt: {}",
                    std::io::Error::last_os_error()
                ));
            }
            previous.push((signal, old));
        }
    }
    Ok(previous)
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        // SAFETY: the borrowed `tty` is still open; restoring settings read from it earlier,
        // then the signal handlers that were in place before.
        unsafe {
            libc::tcsetattr(self.tty.as_raw_fd(), libc::TCSANOW, &self.saved);
            for (signal, old) in &self.previous {
                libc::sigaction(*signal, old, std::ptr::null_mut());
            }
        }
    }
}
