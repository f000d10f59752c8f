//! A headless Chromium driven over the DevTools protocol, for testing the
//! dashboard in a real browser.
//!
//! The protocol goes over `--remote-debugging-pipe` (JSON messages ended
//! by a NUL byte on file descriptors 3 and 4), set up by `sh` from the
//! child's stdin and stdout: no websocket, no CDP client crate (they add a
//! large build for the four commands used here: open a page, evaluate an
//! expression in it, size it, take a screenshot). The page stays open
//! between evaluations, so a test sees it change without a reload.
//!
//! Every wait is bounded; dropping the browser closes it and removes its
//! profile directory.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// Where Chromium is: `$CHROMIUM`, else Debian's `/usr/bin/chromium`, else
/// `chromium` or `chromium-browser` on the `PATH`.
pub(crate) fn find() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let debian = PathBuf::from("/usr/bin/chromium");
    if debian.is_file() {
        return Some(debian);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| [dir.join("chromium"), dir.join("chromium-browser")])
        .find(|p| p.is_file())
}

/// A running headless Chromium with one page open.
pub(crate) struct Browser {
    child: Child,
    to_browser: ChildStdin,
    from_browser: Receiver<Value>,
    next_id: u64,
    session: String,
    profile: PathBuf,
}

/// How long one protocol command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

impl Browser {
    /// Starts `binary` headless and opens `url` in a page `width` pixels
    /// wide.
    pub(crate) fn open(
        binary: &Path,
        url: &str,
        width: u32,
        height: u32,
    ) -> Result<Browser, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let profile = std::env::temp_dir().join(format!(
            "courier-chromium-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&profile).map_err(|e| format!("profile dir: {e}"))?;
        let log = std::fs::File::create(profile.join("chromium.log"))
            .map_err(|e| format!("log file: {e}"))?;
        // fd 3 is what the browser reads (our stdin pipe), fd 4 what it
        // writes (our stdout pipe); its own stdout joins its stderr (the log).
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#)
            .arg(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--mute-audio",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let (Some(to_browser), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err("no pipes to the browser".into());
        };
        let (tx, from_browser) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                message.pop_if(|b| *b == 0);
                if let Ok(value) = serde_json::from_slice::<Value>(&message)
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        let mut browser = Browser {
            child,
            to_browser,
            from_browser,
            next_id: 0,
            session: String::new(),
            profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = target["targetId"].as_str().unwrap_or_default().to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or("no session")?
            .to_owned();
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        browser.call("Page.navigate", json!({ "url": url }))?;
        Ok(browser)
    }

    /// Sends one command (to the page once attached) and waits for its
    /// answer.
    fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .and_then(|()| self.to_browser.flush())
            .map_err(|e| format!("{method}: the browser is gone ({e}); {}", self.log()))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from_browser.recv_timeout(left) {
                Ok(reply) if reply["id"] == id => {
                    if let Some(error) = reply.get("error") {
                        return Err(format!("{method}: {error}"));
                    }
                    return Ok(reply["result"].clone());
                }
                Ok(_event) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("{method}: no answer in {COMMAND_TIMEOUT:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{method}: the browser is gone; {}", self.log()));
                }
            }
        }
    }

    /// The value of a JavaScript expression in the page (`null` when it
    /// throws, e.g. before the page exists).
    pub(crate) fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        )?;
        if result.get("exceptionDetails").is_some() {
            return Ok(Value::Null);
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` every 50 ms until `done` accepts its value or
    /// `within` passes; returns the last value, and how long it took when
    /// it was accepted.
    pub(crate) fn wait_for(
        &mut self,
        expression: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<(Value, Option<Duration>), String> {
        let start = Instant::now();
        loop {
            let value = self.eval(expression)?;
            if done(&value) {
                return Ok((value, Some(start.elapsed())));
            }
            if start.elapsed() >= within {
                return Ok((value, None));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the whole page.
    pub(crate) fn screenshot(&mut self) -> Result<Vec<u8>, String> {
        let height = self
            .eval("document.documentElement.scrollHeight")?
            .as_u64()
            .unwrap_or(900)
            .clamp(200, 4000);
        let width = self.eval("window.innerWidth")?.as_u64().unwrap_or(1400);
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .map_err(|e| format!("screenshot: {e}"))
    }

    /// The end of the browser's log, for failure messages.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.profile.join("chromium.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        format!(
            "chromium's log ends with:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.session.clear();
        let _ = self.call("Browser.close", json!({}));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
