//! Driving load with wrk: a Lua script that cycles through prepared requests, and its report.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// One prepared request.
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub body: Option<String>,
}

/// What wrk measured.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
    pub requests: u64,
}

/// Writes a wrk script that sends `requests` round-robin (each connection starts elsewhere),
/// with `headers` on each.
pub fn script(path: &Path, requests: &[Request], headers: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut lua = String::from("local requests = {\n");
    for r in requests {
        let body = r
            .body
            .as_deref()
            .map_or_else(|| "nil".to_owned(), |b| format!("[==[{b}]==]"));
        writeln!(lua, "  {{\"{}\", [==[{}]==], {body}}},", r.method, r.path)?;
    }
    lua.push_str("}\nlocal headers = {\n");
    for (name, value) in headers {
        writeln!(lua, "  [\"{name}\"] = [==[{value}]==],")?;
    }
    lua.push_str(
        r#"  ["Content-Type"] = "application/json",
}
local counter = 0
function setup(thread)
  thread:set("start", counter * 7919)
  counter = counter + 1
end
local i = 0
function init(args)
  i = start or 0
end
function request()
  i = i + 1
  local r = requests[(i % #requests) + 1]
  return wrk.format(r[1], r[2], headers, r[3])
end
"#,
    );
    std::fs::write(path, lua)?;
    Ok(())
}

/// Runs wrk against `base` for `seconds` with `connections`, pinned by `pin` (a taskset prefix).
pub fn run(
    pin: &[String],
    base: &str,
    script: &Path,
    seconds: u64,
    connections: u32,
) -> anyhow::Result<Report> {
    let mut command = match pin.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg("wrk");
            c
        }
        None => Command::new("wrk"),
    };
    let output = command
        .args(["-t1", "--latency", "-s"])
        .arg(script)
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg(base)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&text).ok_or_else(|| anyhow::anyhow!("cannot read wrk's report:\n{text}"))
}

fn parse(text: &str) -> Option<Report> {
    let mut report = Report {
        requests_per_second: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        non_2xx: 0,
        requests: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => report.requests_per_second = n.parse().ok()?,
            ["50%", t] => report.p50_ms = millis(t)?,
            ["99%", t] => report.p99_ms = millis(t)?,
            ["Non-2xx", "or", "3xx", "responses:", n] => report.non_2xx = n.parse().ok()?,
            [n, "requests", "in", ..] => report.requests = n.parse().ok()?,
            _ => {}
        }
    }
    (report.requests_per_second > 0.0).then_some(report)
}

fn millis(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let text = "Running 8s test @ http://127.0.0.1:1\n  1 threads and 32 connections\n\
            Latency Distribution\n     50%    2.51ms\n     75%  3.00ms\n     90%  4ms\n     99%  850.00us\n\
            98000 requests in 8.00s, 2.6GB read\n  Non-2xx or 3xx responses: 12\n\
            Requests/sec:  12250.50\nTransfer/sec:    331.68MB\n";
        let r = parse(text).unwrap();
        assert_eq!(r.requests_per_second, 12250.5);
        assert_eq!(r.p50_ms, 2.51);
        assert_eq!(r.p99_ms, 0.85);
        assert_eq!(r.non_2xx, 12);
        assert_eq!(r.requests, 98000);
    }
}
