//! A registry a test scripts: an HTTP/1.1 server on a free 127.0.0.1 port
//! that hands every request to the test's handler and writes its answer.
//! kiln tries HTTPS first; its ClientHello is dropped, as a plain-HTTP
//! server's error would end it, and kiln falls back to HTTP (loopback).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

pub struct Request {
    pub method: String,
    /// With its query.
    pub path: String,
    /// Names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

#[derive(Clone)]
pub struct Answer {
    /// 0: the connection is dropped with no answer.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn new(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        Answer {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
        }
    }

    /// `GET /v2/` answers 200, anything else 404.
    pub fn fallback(path: &str) -> Answer {
        Answer::new(if path == "/v2/" { 200 } else { 404 }, &[], &[])
    }
}

/// Serves until the test ends; returns `127.0.0.1:PORT`.
pub fn serve(handler: impl Fn(Request) -> Answer + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let handler = Arc::clone(&handler);
            std::thread::spawn(move || answer(stream, &*handler));
        }
    });
    address
}

fn answer(mut stream: TcpStream, handler: &dyn Fn(Request) -> Answer) {
    let mut first_byte = [0u8; 1];
    if stream.peek(&mut first_byte).is_err() || first_byte[0] == 0x16 {
        return;
    }
    let Some(request) = read_request(&stream) else {
        return;
    };
    let answer = handler(request);
    if answer.status == 0 {
        return;
    }
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.body.len()
    );
    for (k, v) in &answer.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&answer.body);
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let mut parts = first.split(' ');
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}
