//! `--html`: one self-contained page per run (`load`) or per set of
//! results (`report`), rendered by headless Chromium (Debian's `chromium`,
//! installed by `.ci/run`) to a PNG that must hold the text and the plot.
//! Loopback only.

mod util;

use std::process::Command;

use util::{Scratch, Server, have, run, words};

/// Decodes a PNG (8-bit RGB or RGBA, not interlaced: what Chromium writes)
/// with Python's zlib, and prints how many pixels are not white and how
/// many are near each colour given (r,g,b;r,g,b...).
const PIXELS: &str = r#"
import sys, zlib, struct
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat = 8, b""
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
bpp = 3 if ctype == 2 else 4
raw, stride = zlib.decompress(idat), w * bpp
prev, rows, i = bytearray(stride), [], 0
for _ in range(h):
    f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
    i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b, c = prev[x], prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(line)
    prev = line
want = [tuple(map(int, c.split(","))) for c in sys.argv[2].split(";")]
near, ink = [0] * len(want), 0
for line in rows:
    for x in range(0, stride, bpp):
        px = line[x:x + 3]
        if min(px) < 235:
            ink += 1
        for k, c in enumerate(want):
            if sum(abs(px[j] - c[j]) for j in range(3)) < 60:
                near[k] += 1
print(w * h, ink, *near)
"#;

/// Renders `page` with headless Chromium; the PNG's pixel count, inked
/// pixels, and pixels near the two first curve colours.
fn render(page: &str, png: &str) -> Vec<u64> {
    let out = Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .args(["--hide-scrollbars", "--window-size=1000,1500"])
        .arg(format!("--screenshot={png}"))
        .arg(format!("file://{page}"))
        .output()
        .expect("run chromium");
    assert!(
        std::path::Path::new(png).exists(),
        "chromium made no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py = util::python(PIXELS, &[png, "31,119,180;214,39,40"]);
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    String::from_utf8_lossy(&py.stdout)
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

#[test]
fn a_report_page_renders_with_its_tables_and_plot() {
    let d = Scratch::new("html");
    let echo = Server::echo();
    let (one, both) = (d.path("one.html"), d.path("both.html"));
    for (name, rate, extra) in [
        ("a.json", "2000", format!("--html {one}")),
        ("b.json", "4000", String::new()),
    ] {
        let (code, out, err) = run(&words(&format!(
            "load {} --rate {rate} -t 0.8 -i 0.2 --json -q {extra}",
            echo.addr
        )));
        assert_eq!(code, 0, "{err}");
        std::fs::write(d.path(name), out).unwrap();
    }
    let (code, _, err) = run(&[
        "report",
        &d.path("a.json"),
        &d.path("b.json"),
        "--html",
        &both,
    ]);
    assert_eq!(code, 0, "{err}");
    let one_text = std::fs::read_to_string(&one).unwrap();
    let both_text = std::fs::read_to_string(&both).unwrap();
    // Self-contained: nothing to fetch; the run's own figures are there.
    for page in [&one_text, &both_text] {
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<svg"), "an inline figure");
        for fetch in ["src=", "href=", "@import", "url("] {
            assert!(!page.contains(fetch), "{fetch} in the page");
        }
        assert!(page.contains(&echo.addr.to_string()));
        assert!(page.contains("Where datagrams died"));
    }
    // One run has its per-interval panels; two results sit side by side.
    assert!(one_text.contains("datagrams per second"));
    assert!(one_text.contains("arrivals</th><td>even</td>"));
    assert!(both_text.contains("a.json") && both_text.contains("b.json"));
    assert!(both_text.contains("rate · 4000 /s") || both_text.contains("4000 /s"));
    if !have("chromium") {
        return;
    }
    for (page, curves) in [(&one, 1), (&both, 2)] {
        let png = format!("{page}.png");
        let px = render(page, &png);
        let (all, ink, blue, red) = (px[0], px[1], px[2], px[3]);
        assert!(
            ink * 50 > all,
            "{page}: a blank page ({ink} of {all} pixels inked)"
        );
        assert!(
            blue > 300,
            "{page}: the first curve is not drawn ({blue} pixels)"
        );
        if curves == 2 {
            assert!(
                red > 300,
                "{page}: the second curve is not drawn ({red} pixels)"
            );
        }
    }
}

#[test]
fn a_one_way_page_says_the_sink_counts_loss_instead_of_zero() {
    let d = Scratch::new("html-one-way");
    let sink = Server::start(&words("sink --bind 127.0.0.1:0 --duration 5 -q"));
    let page = d.path("one-way.html");
    let (code, _, err) = run(&words(&format!(
        "load {} --match none --rate 2000 -t 0.3 -q --html {page}",
        sink.addr
    )));
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&page).unwrap();
    assert!(
        text.contains("one-way (--match none): nothing is expected back"),
        "{text}"
    );
    // Neither a loss of 0 nor 0.000%: the generator cannot know it.
    assert!(text.contains("<td>- (one-way)</td>"), "{text}");
    assert!(!text.contains("0.000%"), "{text}");
}
