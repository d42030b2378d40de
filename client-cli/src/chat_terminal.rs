//! What `comptoir chat` (standalone or through a daemon) reads typed lines
//! from and prints through. In a terminal, a line editor (rustyline): the
//! line being typed stays whole on its prompt line while messages, ticks
//! and connection lines are printed above it; typed lines are kept in an
//! in-memory history (up and down arrows; never written to disk, they are
//! plaintext); Ctrl-C, or Ctrl-D on an empty line, ends the chat. Elsewhere
//! (a script piping into `chat`), standard input is read line by line and
//! the output goes to standard output and standard error as it is.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{ColorMode, Config, Editor, ExternalPrinter, Helper};
use tokio::sync::mpsc;

/// A terminal in line mode keeps at most this many bytes of one line (and
/// drops the rest of it without telling): Linux's 4096-byte line buffer,
/// less the newline. Only lines read without the line editor can be cut.
pub(crate) const TERMINAL_LINE_MAX: usize = 4095;

/// The prompt on the line being typed.
const PROMPT: &str = "> ";

/// Typed lines kept for the up arrow.
const HISTORY_LINES: usize = 500;

/// One line typed into `chat`.
pub(crate) enum Typed {
    /// A whole line.
    Line(String),
    /// A line as long as the terminal's line buffer: possibly cut by it.
    MaybeCut,
}

/// The longest a line to print waits for the editor to show its prompt
/// (it does within milliseconds of the previous line being entered); past
/// it the line is printed anyway.
const PROMPT_WAIT: Duration = Duration::from_secs(2);

/// Whether the editor shows its prompt now. rustyline's printer writes
/// straight to the terminal when the editor is not reading, and through
/// the editor (above the prompt) when it is; a line printed straight while
/// the editor starts reading would land on the prompt line. So lines are
/// printed only while the prompt is shown (or once the editor is gone).
#[derive(Default)]
struct PromptShown {
    /// The prompt is drawn: set when the editor draws it, cleared when a
    /// line is entered.
    shown: Mutex<bool>,
    changed: Condvar,
    /// The editor stopped reading for good (Ctrl-C, Ctrl-D, no terminal).
    gone: AtomicBool,
}

impl PromptShown {
    fn set(&self, shown: bool) {
        *self.shown.lock().unwrap_or_else(PoisonError::into_inner) = shown;
        self.changed.notify_all();
    }

    /// Wait until the prompt is shown, the editor is gone or
    /// [`PROMPT_WAIT`] passed.
    fn wait(&self) {
        let deadline = Instant::now() + PROMPT_WAIT;
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        while !*shown && !self.gone.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            shown = self
                .changed
                .wait_timeout(shown, left.min(Duration::from_millis(100)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// The editor's hooks: told when the prompt is drawn (the terminal is in
/// the editor's mode then) and when a line is entered.
struct ChatHelper(Arc<PromptShown>);

impl Completer for ChatHelper {
    type Candidate = String;
}

impl Hinter for ChatHelper {
    type Hint = String;
}

impl Highlighter for ChatHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        self.0.set(true);
        Cow::Borrowed(prompt)
    }
}

impl Validator for ChatHelper {
    fn validate(&self, _: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        // Enter: the prompt line is finished.
        self.0.set(false);
        Ok(ValidationResult::Valid(None))
    }
}

impl Helper for ChatHelper {}

/// Prints whole lines above the line being typed, once the prompt is shown.
#[derive(Clone)]
pub(crate) struct SharedPrinter {
    printer: Arc<Mutex<Box<dyn ExternalPrinter + Send>>>,
    prompt: Arc<PromptShown>,
}

impl SharedPrinter {
    fn print(&self, text: String) -> rustyline::Result<()> {
        self.prompt.wait();
        self.printer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .print(text)
    }
}

/// The chat's standard input and output: typed lines arrive on `lines`
/// (closed when the input ends, or on Ctrl-C or Ctrl-D in the line
/// editor); [`Self::out`] and [`Self::notes`] are where messages and the
/// rest (ticks, connection lines, warnings) are written.
pub(crate) struct ChatTerminal {
    /// The typed lines.
    pub(crate) lines: mpsc::UnboundedReceiver<Typed>,
    /// With the line editor: prints above the prompt.
    printer: Option<SharedPrinter>,
    /// Whether standard error is the terminal too (else notes go to it
    /// as they are: they cannot mix into the typed line).
    notes_on_terminal: bool,
    /// The terminal's settings before the editor changed them, and whether
    /// the editor is reading a line now: if the chat ends meanwhile (an
    /// error), the settings are put back so the shell is usable.
    restore: Option<(nix::sys::termios::Termios, Arc<AtomicBool>)>,
}

impl ChatTerminal {
    /// Start reading: with the line editor when standard input and output
    /// are a terminal, else line by line.
    pub(crate) fn open() -> Self {
        if std::io::stdin().is_terminal()
            && std::io::stdout().is_terminal()
            && let Some(terminal) = Self::with_editor()
        {
            return terminal;
        }
        Self {
            lines: plain_lines(),
            printer: None,
            notes_on_terminal: false,
            restore: None,
        }
    }

    fn with_editor() -> Option<Self> {
        let config = Config::builder()
            .max_history_size(HISTORY_LINES)
            .ok()?
            .auto_add_history(true)
            // The helper's highlighter colours nothing, but rustyline calls
            // it (and so tells when the prompt is drawn) only with colours
            // on, which NO_COLOR would turn off.
            .color_mode(ColorMode::Forced)
            .build();
        let mut editor: Editor<ChatHelper, DefaultHistory> = Editor::with_config(config).ok()?;
        let prompt = Arc::new(PromptShown::default());
        editor.set_helper(Some(ChatHelper(prompt.clone())));
        let printer: Box<dyn ExternalPrinter + Send> =
            Box::new(editor.create_external_printer().ok()?);
        let printer = SharedPrinter {
            printer: Arc::new(Mutex::new(printer)),
            prompt: prompt.clone(),
        };
        let saved = nix::sys::termios::tcgetattr(std::io::stdin()).ok()?;
        let reading = Arc::new(AtomicBool::new(false));
        let (lines_tx, lines) = mpsc::unbounded_channel::<Typed>();
        let reading_now = reading.clone();
        std::thread::spawn(move || {
            loop {
                reading_now.store(true, Ordering::SeqCst);
                let read = editor.readline(PROMPT);
                reading_now.store(false, Ordering::SeqCst);
                match read {
                    Ok(line) => {
                        if lines_tx
                            .send(Typed::Line(line.trim_end().to_string()))
                            .is_err()
                        {
                            break;
                        }
                    }
                    // Ctrl-C, Ctrl-D on an empty line (Interrupted, Eof), or
                    // the terminal gone.
                    Err(_) => break,
                }
            }
            prompt.gone.store(true, Ordering::SeqCst);
            prompt.set(false);
        });
        Some(Self {
            lines,
            printer: Some(printer),
            notes_on_terminal: std::io::stderr().is_terminal(),
            restore: Some((saved, reading)),
        })
    }

    /// Whether the line editor reads the typed lines.
    pub(crate) fn has_editor(&self) -> bool {
        self.printer.is_some()
    }

    /// Where messages are written (standard output).
    pub(crate) fn out(&self) -> ChatOutput {
        match &self.printer {
            Some(printer) => ChatOutput::AbovePrompt(printer.clone(), Vec::new()),
            None => ChatOutput::Stdout,
        }
    }

    /// Where ticks, connection lines and warnings are written (standard
    /// error).
    pub(crate) fn notes(&self) -> ChatOutput {
        match &self.printer {
            Some(printer) if self.notes_on_terminal => {
                ChatOutput::AbovePrompt(printer.clone(), Vec::new())
            }
            _ => ChatOutput::Stderr,
        }
    }
}

impl Drop for ChatTerminal {
    fn drop(&mut self) {
        if let Some((saved, reading)) = &self.restore
            && reading.load(Ordering::SeqCst)
        {
            // The editor is still reading (the chat ended on an error): put
            // the terminal back as it was, bracketed paste off, and leave
            // the prompt line.
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSADRAIN,
                saved,
            );
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(b"\x1b[?2004l\r\n");
            let _ = stdout.flush();
        }
    }
}

/// One of the chat's outputs: written as is, or, with the line editor,
/// printed above the prompt a whole line at a time.
pub(crate) enum ChatOutput {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Above the prompt; the bytes of a line not yet ended.
    AbovePrompt(SharedPrinter, Vec<u8>),
}

impl Write for ChatOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Stdout => std::io::stdout().write(buf),
            Self::Stderr => std::io::stderr().write(buf),
            Self::AbovePrompt(printer, pending) => {
                pending.extend_from_slice(buf);
                if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                    let lines: Vec<u8> = pending.drain(..=end).collect();
                    let text = String::from_utf8_lossy(&lines).into_owned();
                    printer.print(text).map_err(std::io::Error::other)?;
                }
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Stdout => std::io::stdout().flush(),
            Self::Stderr => std::io::stderr().flush(),
            // Lines are printed when they end.
            Self::AbovePrompt(..) => Ok(()),
        }
    }
}

/// The lines on standard input, read by a thread of their own (a line as
/// long as a terminal's line buffer is reported as possibly cut).
fn plain_lines() -> mpsc::UnboundedReceiver<Typed> {
    let (lines_tx, lines) = mpsc::unbounded_channel::<Typed>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let terminal = stdin.is_terminal();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = line.trim_end_matches(['\n', '\r']);
                    let typed = if terminal && text.len() >= TERMINAL_LINE_MAX {
                        Typed::MaybeCut
                    } else {
                        Typed::Line(text.trim_end().to_string())
                    };
                    if lines_tx.send(typed).is_err() {
                        break;
                    }
                }
            }
        }
    });
    lines
}
