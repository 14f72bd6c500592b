//! A LuCI stand-in for headless Chromium: an HTTP server on 127.0.0.1 that serves one
//! luci-app-csipd view inside a page providing what LuCI gives a view (`view`, `form`,
//! `rpc`, `uci`, `ui`, `poll`, `baseclass`, `L`, `E`, `_`), and answers the views' ubus
//! calls by running the real rpcd plugin (`csipd rpcd call METHOD`, arguments on stdin)
//! against a real csipd — as uhttpd-mod-ubus and rpcd do, with the ACL file enforced.
//!
//! What is stand-in (LuCI itself cannot be installed here): the `form`/`uci` modules are
//! small re-implementations of the LuCI behaviour the views rely on (option rendering,
//! validate hooks, parse/save, staged sections), and the stylesheet imitates LuCI's
//! narrow-screen table rule (header row hidden, each cell labelled from `data-title`).
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// What the served pages talk to.
#[derive(Clone)]
pub struct Backend {
    /// The status URL of a running csipd (CSIPD_STATUS_URL for the plugin).
    pub status_url: String,
    /// The UCI file the plugin and the `uci` stand-in use (CSIPD_CONFIG).
    pub config: PathBuf,
    /// Run by cert_install to reload csipd (CSIPD_RELOAD_CMD).
    pub reload_cmd: String,
    /// Calls as the user without write access: write methods are refused as rpcd does.
    pub read_only: bool,
    /// A script run after the view rendered (the body of an async function of `mod`).
    pub script: String,
    /// The ubus calls the plugin answered, "method {args}".
    pub calls: Arc<Mutex<Vec<String>>>,
}

pub struct Harness {
    pub url: String,
    pub backend: Arc<Mutex<Backend>>,
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The ACL's methods by access ("read"/"write").
fn acl() -> BTreeMap<String, String> {
    let path = manifest().join("luci-app/root/usr/share/rpcd/acl.d/luci-app-csipd.json");
    let acl: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for access in ["read", "write"] {
        for m in acl["luci-app-csipd"][access]["ubus"]["csipd"]
            .as_array()
            .unwrap()
        {
            out.insert(m.as_str().unwrap().to_string(), access.to_string());
        }
    }
    out
}

/// The UCI file as LuCI's uci module holds it: sections with .name/.type/.anonymous.
pub fn uci_sections(config: &Path) -> Value {
    let text = std::fs::read_to_string(config).unwrap_or_default();
    let file = csipd::config::uci::parse(&text, "config").expect("test config parses");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let sections: Vec<Value> = file
        .sections
        .iter()
        .map(|s| {
            let n = counts.entry(s.section_type.clone()).or_default();
            let name = s
                .name
                .clone()
                .unwrap_or_else(|| format!("cfg{:02x}{}", *n, s.section_type.len()));
            *n += 1;
            let mut obj = serde_json::Map::new();
            obj.insert(".name".into(), Value::from(name));
            obj.insert(".type".into(), Value::from(s.section_type.clone()));
            obj.insert(".anonymous".into(), Value::from(s.name.is_none()));
            for o in &s.options {
                let v = match o.kind {
                    csipd::config::uci::OptionKind::List => {
                        Value::from(o.values.iter().map(|v| v.text.clone()).collect::<Vec<_>>())
                    }
                    csipd::config::uci::OptionKind::Option => Value::from(o.values[0].text.clone()),
                };
                obj.insert(o.name.clone(), v);
            }
            Value::Object(obj)
        })
        .collect();
    Value::from(sections)
}

/// Runs the plugin the way rpcd does: `csipd rpcd call METHOD`, arguments on stdin.
fn plugin(b: &Backend, method: &str, args: &Value) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_csipd"))
        .args(["rpcd", "call", method])
        .env("CSIPD_STATUS_URL", &b.status_url)
        .env("CSIPD_CONFIG", &b.config)
        .env("CSIPD_RELOAD_CMD", &b.reload_cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("csipd runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(args.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("plugin answers");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "plugin {method} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// What a LuCI user's rpc call gets: the plugin's answer, or rpcd's refusal when the
/// ACL does not grant the method at the user's access level.
fn ubus(b: &Backend, body: &str) -> Value {
    let req: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let method = req["method"].as_str().unwrap_or("").to_string();
    let args = req
        .get("args")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    let allowed = match acl().get(&method).map(String::as_str) {
        Some("read") => true,
        Some("write") => !b.read_only,
        _ => false,
    };
    if !allowed {
        return serde_json::json!({
            "__rpc_error": format!("RPCError: rpc call to csipd/{method} failed with ubus code 6: Permission denied")
        });
    }
    b.calls.lock().unwrap().push(format!("{method} {}", args));
    plugin(b, &method, &args)
}

const STYLE: &str = r#"
body { font: 14px/1.4 sans-serif; margin: 0 10px; color: #222; }
h2 { font-size: 20px; } h3 { font-size: 16px; margin: 14px 0 4px; }
.table { width: 100%; border-collapse: collapse; }
.th, .td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #e5e5e5; vertical-align: top; }
.th { background: #f3f3f3; }
.alert-message { padding: 8px 10px; margin: 6px 0; background: #fff3cd; border-left: 4px solid #e0a800; }
.alert-message.notice { background: #e7f3fe; border-left-color: #1f77b4; }
.cbi-value { margin: 8px 0; }
.cbi-value-title { display: inline-block; width: 34%; font-weight: bold; vertical-align: top; }
.cbi-value-field { display: inline-block; width: 62%; }
.cbi-value-description { color: #666; font-size: 90%; }
.cbi-input-invalid { border: 2px solid #c00 !important; background: #fee; }
.cbi-value-error { color: #c00; font-size: 90%; }
.cbi-section { border: 1px solid #ddd; padding: 6px 10px; margin: 10px 0; }
input[type=text], select, textarea { max-width: 100%; box-sizing: border-box; }
@media (max-width: 600px) {
  .table, .table tbody, .tr, .td { display: block; width: auto; }
  .table-titles { display: none; }
  .td[data-title]::before { content: attr(data-title); display: block; font-weight: bold; font-size: 85%; color: #555; }
  .cbi-value-title, .cbi-value-field { display: block; width: auto; }
}
"#;

/// The stand-in LuCI runtime (see the module doc).
const RUNTIME: &str = r#"
var CALLS = [];
String.prototype.format = function() {
  var args = arguments, i = 0;
  return this.replace(/%[sd]/g, function(m) { var v = args[i++]; return m == '%d' ? String(Math.round(v)) : String(v); });
};
function _(s) { return s; }
function E(tag, attrs, kids) {
  if (Array.isArray(attrs) || typeof attrs !== 'object' || attrs instanceof Node) { kids = attrs; attrs = {}; }
  var e = document.createElement(tag);
  Object.keys(attrs || {}).forEach(function (k) {
    if (typeof attrs[k] === 'function') e.addEventListener(k, attrs[k]);
    else if (attrs[k] != null && attrs[k] !== false) e.setAttribute(k, attrs[k]);
  });
  (Array.isArray(kids) ? kids : (kids == null ? [] : [kids])).forEach(function add(k) {
    if (Array.isArray(k)) k.forEach(add);
    else if (k instanceof Node) e.appendChild(k);
    else if (k != null) e.appendChild(document.createTextNode('' + k));
  });
  return e;
}
var L = {
  resolveDefault: function (p, d) { return Promise.resolve(p).catch(function () { return d; }); },
  hasViewPermission: function () { return !READ_ONLY; },
  url: function () { return '/cgi-bin/luci/' + Array.prototype.join.call(arguments, '/'); }
};
var view = { extend: function (o) { return o; } };
var baseclass = { extend: function (o) { return o; } };
var poll = { add: function (fn, s) { document.body.setAttribute('data-poll-s', s); } };
var ui = {
  addNotification: function (title, kids, cls) {
    document.getElementById('notifications').appendChild(E('div', { 'class': 'alert-message ' + (cls || '') }, [ title ? E('h4', {}, [title]) : '', kids ]));
  },
  createHandlerFn: function (ctx, name) { return function (ev) { return ctx[name](ev); }; }
};
var rpc = { declare: function (d) {
  return function () {
    var args = {}, given = arguments;
    (d.params || []).forEach(function (p, i) { if (given[i] !== undefined) args[p] = given[i]; });
    CALLS.push(d.method);
    return fetch('/ubus', { method: 'POST', body: JSON.stringify({ method: d.method, args: args }) })
      .then(function (r) { return r.json(); })
      .then(function (a) { if (a && a.__rpc_error) throw new Error(a.__rpc_error); return a; });
  };
} };
// LuCI's uci module: the loaded file plus this page's changes; sections() merges them.
var uci = {
  data: UCI_DATA, saved: false,
  find: function (conf, sid) { return this.data.filter(function (s) { return s['.name'] == sid; })[0]; },
  sections: function (conf, type) {
    return JSON.parse(JSON.stringify(this.data.filter(function (s) { return type == null || s['.type'] == type; })));
  },
  get: function (conf, sid, opt) { var s = this.find(conf, sid); return s ? (opt == null ? s : s[opt]) : null; },
  set: function (conf, sid, opt, v) { var s = this.find(conf, sid); if (s) s[opt] = v; },
  unset: function (conf, sid, opt) { var s = this.find(conf, sid); if (s) delete s[opt]; },
  save: function () { this.saved = true; CALLS.push('uci.save'); return Promise.resolve(); }
};
// LuCI's form module, the parts the settings view uses.
function Option(kind, section, name, title, descr) {
  this.kind = kind; this.section = section; this.option = name; this.title = title || ''; this.description = descr || '';
  this.values = []; this.map = section.map;
}
Option.prototype.value = function (k, v) { this.values.push([k, v == null ? k : v]); };
Option.prototype.depends = function () {};
Option.prototype.validate = function () { return true; };
Option.prototype.widgetId = function (sid) { return 'widget.cbid.csipd.' + sid + '.' + this.option; };
Option.prototype.formvalue = function (sid) {
  var el = document.getElementById(this.widgetId(sid));
  if (!el) return null;
  if (this.kind == 'Flag') return el.checked ? '1' : '0';
  if (this.kind == 'MultiValue') return Array.prototype.filter.call(el.options, function (o) { return o.selected; }).map(function (o) { return o.value; });
  return el.value;
};
Option.prototype.triggerValidation = function (sid) {
  var el = document.getElementById(this.widgetId(sid));
  if (!el) return true;
  var r = this.validate(sid, this.formvalue(sid));
  var err = document.getElementById(this.widgetId(sid) + '.error');
  if (r === true) { el.classList.remove('cbi-input-invalid'); if (err) err.textContent = ''; return true; }
  el.classList.add('cbi-input-invalid');
  if (err) err.textContent = r;
  return false;
};
Option.prototype.render = function (sid) {
  var v = uci.get('csipd', sid, this.option), self = this, w;
  if (v == null && this['default'] != null) v = this['default'];
  var id = this.widgetId(sid);
  if (this.kind == 'ListValue' || this.kind == 'MultiValue') {
    w = E('select', { id: id, multiple: this.kind == 'MultiValue' ? 'multiple' : null }, this.values.map(function (o) {
      var sel = Array.isArray(v) ? v.indexOf(o[0]) > -1 : v == o[0];
      return E('option', { value: o[0], selected: sel ? 'selected' : null }, [ o[1] ]);
    }));
  } else if (this.kind == 'Flag') {
    w = E('input', { id: id, type: 'checkbox', checked: v == '1' ? 'checked' : null });
  } else {
    w = E('input', { id: id, type: 'text', value: v == null ? '' : v, placeholder: this.placeholder || null });
  }
  w.addEventListener('input', function () { self.triggerValidation(sid); });
  return E('div', { 'class': 'cbi-value', 'data-name': this.option }, [
    E('label', { 'class': 'cbi-value-title', 'for': id }, [ this.title ]),
    E('div', { 'class': 'cbi-value-field' }, [ w, E('div', { 'class': 'cbi-value-error', id: id + '.error' }),
      this.description ? E('div', { 'class': 'cbi-value-description' }, [ this.description ]) : '' ])
  ]);
};
Option.prototype.parse = function (sid) {
  var v = this.formvalue(sid);
  if (v == null) return Promise.resolve();
  if (this.validate(sid, v) !== true && this.kind != 'Flag')
    return Promise.reject(new Error('Option "' + this.title + '" contains an invalid input value.'));
  if (v === '' || (Array.isArray(v) && !v.length)) uci.unset('csipd', sid, this.option);
  else uci.set('csipd', sid, this.option, v);
  return Promise.resolve();
};
function Section(kind, map, a, b, title, descr) {
  this.kind = kind; this.map = map; this.children = []; this.title = title || ''; this.description = descr || '';
  if (kind == 'NamedSection') { this.section = a; this.sectiontype = b; }
  else { this.sectiontype = a; this.title = b || ''; this.description = title || ''; }
}
Section.prototype.tab = function () {};
Section.prototype.option = function (cls, name, title, descr) { var o = new Option(cls.kind, this, name, title, descr); this.children.push(o); return o; };
Section.prototype.taboption = function (tab, cls, name, title, descr) { return this.option(cls, name, title, descr); };
Section.prototype.cfgsections = function () {
  if (this.kind == 'NamedSection') return uci.get('csipd', this.section) ? [ this.section ] : [];
  return uci.sections('csipd', this.sectiontype).map(function (s) { return s['.name']; });
};
function CbiMap(config, title, descr) { this.config = config; this.title = title; this.description = descr; this.children = []; }
CbiMap.prototype.section = function (cls, a, b, c, d) { var s = new Section(cls.kind, this, a, b, c, d); this.children.push(s); return s; };
CbiMap.prototype.render = function () {
  var self = this;
  return Promise.resolve(E('div', { 'class': 'cbi-map', id: 'cbi-csipd' }, [ E('h2', {}, [ this.title ]), E('div', { 'class': 'cbi-map-descr' }, [ this.description ]) ]
    .concat(this.children.map(function (s) {
      return E('div', { 'class': 'cbi-section', 'data-section': s.sectiontype }, [ E('h3', {}, [ s.title ]) ].concat(s.cfgsections().map(function (sid) {
        return E('div', { 'class': 'cbi-section-node', 'data-sid': sid }, s.children.map(function (o) { return o.render(sid); }));
      })));
    }))));
};
CbiMap.prototype.parse = function () {
  var tasks = [];
  this.children.forEach(function (s) { s.cfgsections().forEach(function (sid) { s.children.forEach(function (o) { tasks.push(o.parse(sid)); }); }); });
  return Promise.all(tasks);
};
CbiMap.prototype.save = function (cb) {
  return this.parse().then(cb).then(function () { return uci.save(); });
};
var form = { Map: CbiMap };
['NamedSection', 'GridSection', 'TypedSection', 'TableSection'].forEach(function (k) { form[k] = { kind: k }; });
['Value', 'ListValue', 'Flag', 'MultiValue', 'DynamicList', 'DummyValue'].forEach(function (k) { form[k] = { kind: k }; });
"#;

fn page(b: &Backend, view_path: &str) -> String {
    let source = std::fs::read_to_string(
        manifest()
            .join("luci-app/htdocs/luci-static/resources/view")
            .join(format!("{view_path}.js")),
    )
    .unwrap_or_else(|e| panic!("view {view_path}: {e}"));
    format!(
        r#"<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head><body><div id="notifications"></div><div id="maincontent"></div><script>
var READ_ONLY = {read_only};
var UCI_DATA = {uci};
{RUNTIME}
var mod = (new Function('view', 'form', 'rpc', 'uci', 'ui', 'poll', 'baseclass', 'L', 'E', '_', {source}))(view, form, rpc, uci, ui, poll, baseclass, L, E, _);
Promise.resolve(mod.load ? mod.load() : null).then(function (data) {{ return mod.render(data); }}).then(function (node) {{
  if (mod.title) document.getElementById('maincontent').appendChild(E('h3', {{}}, [mod.title]));
  document.getElementById('maincontent').appendChild(node);
  return (async function (mod) {{ {script} }})(mod);
}}).then(function (r) {{ return r; }}, function (e) {{ document.body.setAttribute('data-script-error', String(e && e.message || e)); }})
.then(function () {{
  var t = document.querySelector('.table-titles');
  if (t) document.body.setAttribute('data-header-display', getComputedStyle(t).display);
  var txt = document.querySelector('svg text');
  if (txt) document.body.setAttribute('data-chart-text-px', txt.getBoundingClientRect().height.toFixed(1));
  document.body.setAttribute('data-calls', CALLS.join(' '));
  document.body.setAttribute('data-done', '1');
}}, function (e) {{ document.body.setAttribute('data-failed', String(e && e.stack || e)); }});
</script></body></html>"#,
        read_only = b.read_only,
        uci = uci_sections(&b.config),
        script = b.script,
        source = Value::from(source),
    )
}

fn handle(mut stream: TcpStream, backend: &Arc<Mutex<Backend>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let b = backend.lock().unwrap().clone();
    let (ctype, text) = if let Some(view) = path.strip_prefix("/view/") {
        ("text/html; charset=utf-8", page(&b, view))
    } else if path == "/ubus" {
        (
            "application/json",
            ubus(&b, &String::from_utf8_lossy(&body)).to_string(),
        )
    } else {
        ("text/plain", String::new())
    };
    let status = if path.starts_with("/view/") || path == "/ubus" {
        "200 OK"
    } else {
        "404 Not Found"
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

impl Harness {
    pub fn start(backend: Backend) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let backend = Arc::new(Mutex::new(backend));
        let shared = backend.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let b = shared.clone();
                std::thread::spawn(move || handle(stream, &b));
            }
        });
        Harness { url, backend }
    }

    /// Sets the script and access for the next page load.
    pub fn set(&self, read_only: bool, script: &str) {
        let mut b = self.backend.lock().unwrap();
        b.read_only = read_only;
        b.script = script.to_string();
    }

    pub fn calls(&self) -> Vec<String> {
        self.backend.lock().unwrap().calls.lock().unwrap().clone()
    }
}
