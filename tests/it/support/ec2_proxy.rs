//! An EC2 endpoint of the project's own between a foreign controller (the real VPC Resource
//! Controller) and moto: it forwards every Query call and mends where moto is not EC2.
//!
//! - AssignPrivateIpAddresses: moto 5.2.5 answers with every address of the ENI (primary too);
//!   EC2 answers with the new ones only, and the VPC Resource Controller hands out exactly what
//!   the answer lists, so the answer is rewritten to the addresses the call added.
//! - moto enforces no per-ENI limit: a call that would take an ENI past its instance type's
//!   `ipv4AddressesPerInterface` (primary included) is answered `PrivateIpAddressLimitExceeded`,
//!   as EC2 does, without reaching moto.
//! - Every call is counted by action.
//! - With an account ([`Ec2Proxy::start_with_account`]): EC2's latency and account throttling
//!   (`RequestLimitExceeded`), played by [`super::ec2_account`] before the call is forwarded.
//!
//! It runs in the test process (Rust rather than Python in moto's venv): it stops with the test
//! however the test ends, and the test reads its counts directly. EC2's latency and account
//! throttling (`RequestLimitExceeded`) for the benchmark belong in [`ProxyState::answer`], before
//! the call is forwarded, where the action is known ([`ProxyState::account_gate`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::ec2_account::{Account, AccountSpec};
use super::lock;
use super::loopback_http::{LoopbackServer, Request, Response};
use super::moto::Moto;

const XMLNS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";
const XML: &str = "text/xml;charset=UTF-8";

pub struct Ec2Proxy {
    state: Arc<ProxyState>,
    server: LoopbackServer,
}

struct ProxyState {
    moto: &'static Moto,
    calls: Mutex<BTreeMap<String, u64>>,
    refused: Mutex<BTreeMap<String, u64>>,
    /// Address limit per ENI (primary included), learnt once from moto.
    limits: Mutex<HashMap<String, usize>>,
    /// One AssignPrivateIpAddresses at a time per ENI (the rewrite compares the ENI before and
    /// after); calls on other ENIs go on meanwhile, as EC2's would.
    assigning: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Held back this long before being forwarded, by action ([`Ec2Proxy::delay`]).
    delays: Mutex<HashMap<String, std::time::Duration>>,
    /// EC2's latency and account buckets, for the benchmark.
    account: Option<Account>,
}

impl Ec2Proxy {
    pub fn start(moto: &'static Moto) -> Ec2Proxy {
        Self::start_state(moto, None)
    }

    /// A proxy that also plays EC2's latency and the account's throttling of `spec`.
    pub fn start_with_account(moto: &'static Moto, spec: AccountSpec) -> Ec2Proxy {
        Self::start_state(moto, Some(Account::new(spec)))
    }

    fn start_state(moto: &'static Moto, account: Option<Account>) -> Ec2Proxy {
        let state = Arc::new(ProxyState {
            moto,
            calls: Mutex::default(),
            refused: Mutex::default(),
            limits: Mutex::default(),
            assigning: Mutex::default(),
            delays: Mutex::default(),
            account,
        });
        let handler = state.clone();
        let server = LoopbackServer::start("ec2-proxy", Arc::new(move |r| handler.answer(r)));
        Ec2Proxy { state, server }
    }

    /// The endpoint to give the client (`AWS_ENDPOINT_URL_EC2`).
    pub fn endpoint(&self) -> String {
        self.server.url()
    }

    /// Calls received, by action.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        lock(&self.state.calls).clone()
    }

    /// Holds every later call of `action` back `by` before it is forwarded (counted on
    /// arrival), so a controller's calls can still land after it was switched off.
    pub fn delay(&self, action: &str, by: std::time::Duration) {
        lock(&self.state.delays).insert(action.to_owned(), by);
    }

    /// Calls answered with an error by the proxy itself, by error code.
    pub fn refused(&self) -> BTreeMap<String, u64> {
        lock(&self.state.refused).clone()
    }

    /// Calls answered `RequestLimitExceeded` by the account's buckets, by action.
    pub fn throttled(&self) -> BTreeMap<String, u64> {
        self.state
            .account
            .as_ref()
            .map(Account::throttled)
            .unwrap_or_default()
    }
}

impl ProxyState {
    fn answer(&self, request: Request) -> Response {
        let form = parse_form(&request.body);
        let action = form.get("Action").cloned().unwrap_or_default();
        *lock(&self.calls).entry(action.clone()).or_default() += 1;
        self.hold_back(&action);
        if let Err(throttled) = self.account_gate(&action) {
            return throttled;
        }
        let result = match action.as_str() {
            "AssignPrivateIpAddresses" => self.assign(&request, &form),
            _ => self.forward(&request),
        };
        result.unwrap_or_else(|e| Response::new(502, "text/plain", format!("ec2 proxy: {e}")))
    }

    fn hold_back(&self, action: &str) {
        let delay = lock(&self.delays).get(action).copied();
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
    }

    /// EC2's latency and account throttling, when the proxy plays an account.
    fn account_gate(&self, action: &str) -> Result<(), Response> {
        match &self.account {
            Some(account) => account.admit(action),
            None => Ok(()),
        }
    }

    fn forward(&self, request: &Request) -> Result<Response, String> {
        const HOP: [&str; 5] = [
            "host",
            "content-length",
            "connection",
            "accept-encoding",
            "keep-alive",
        ];
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .filter(|(k, _)| !HOP.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, body) = self
            .moto
            .try_post(&request.path, &headers, &request.body)
            .map_err(|e| format!("moto: {e}"))?;
        Ok(Response::new(status, XML, body))
    }

    fn assign(
        &self,
        request: &Request,
        form: &BTreeMap<String, String>,
    ) -> Result<Response, String> {
        let eni = form
            .get("NetworkInterfaceId")
            .ok_or("AssignPrivateIpAddresses without NetworkInterfaceId")?;
        let asked = match form.get("SecondaryPrivateIpAddressCount") {
            Some(n) => n.parse::<usize>().map_err(|e| format!("count {n}: {e}"))?,
            None => form
                .keys()
                .filter(|k| k.starts_with("PrivateIpAddress."))
                .count(),
        };
        let eni_lock = lock(&self.assigning)
            .entry(eni.clone())
            .or_default()
            .clone();
        let _one_at_a_time = lock(&eni_lock);
        let before = self.eni_addresses(eni)?;
        let limit = self.limit(eni)?;
        if before.len() + asked > limit {
            *lock(&self.refused)
                .entry("PrivateIpAddressLimitExceeded".to_owned())
                .or_default() += 1;
            return Ok(error(
                "PrivateIpAddressLimitExceeded",
                &format!(
                    "Number of private addresses will exceed limit: {eni} holds {}, {asked} asked, limit {limit}",
                    before.len()
                ),
            ));
        }
        let answer = self.forward(request)?;
        if answer.status != 200 {
            return Ok(answer);
        }
        let text = String::from_utf8_lossy(&answer.body);
        let added: Vec<String> = tag_values(&text, "privateIpAddress")
            .into_iter()
            .filter(|a| !before.contains(a))
            .collect();
        let items: String = added
            .iter()
            .map(|a| format!("<item><privateIpAddress>{a}</privateIpAddress></item>"))
            .collect();
        Ok(Response::new(
            200,
            XML,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<AssignPrivateIpAddressesResponse xmlns=\"{XMLNS}\">\
                 <requestId>winipam-ec2-proxy</requestId><networkInterfaceId>{eni}</networkInterfaceId>\
                 <assignedPrivateIpAddressesSet>{items}</assignedPrivateIpAddressesSet><assignedIpv4PrefixSet/>\
                 </AssignPrivateIpAddressesResponse>"
            ),
        ))
    }

    /// Every address of the ENI, primary included.
    fn eni_addresses(&self, eni: &str) -> Result<BTreeSet<String>, String> {
        let body = self.query(&format!(
            "Action=DescribeNetworkInterfaces&NetworkInterfaceId.1={eni}"
        ))?;
        Ok(tag_values(&body, "privateIpAddress").into_iter().collect())
    }

    /// The address limit of the ENI's instance type (primary included).
    fn limit(&self, eni: &str) -> Result<usize, String> {
        if let Some(limit) = lock(&self.limits).get(eni) {
            return Ok(*limit);
        }
        let body = self.query(&format!(
            "Action=DescribeNetworkInterfaces&NetworkInterfaceId.1={eni}"
        ))?;
        let instance = first(&body, "instanceId").ok_or(format!("{eni} is not attached"))?;
        let body = self.query(&format!("Action=DescribeInstances&InstanceId.1={instance}"))?;
        let instance_type =
            first(&body, "instanceType").ok_or(format!("no instance type for {instance}"))?;
        let body = self.query(&format!(
            "Action=DescribeInstanceTypes&InstanceType.1={instance_type}"
        ))?;
        let limit: usize = first(&body, "ipv4AddressesPerInterface")
            .and_then(|l| l.parse().ok())
            .ok_or(format!("no address limit for {instance_type}"))?;
        lock(&self.limits).insert(eni.to_owned(), limit);
        Ok(limit)
    }

    /// A call of the proxy's own to moto (not counted): the body of a 200 answer.
    fn query(&self, form: &str) -> Result<String, String> {
        match self
            .moto
            .query(&format!("{form}&Version=2016-11-15"))
            .map_err(|e| format!("moto: {e}"))?
        {
            (200, body) => Ok(body),
            (status, body) => Err(format!("moto answered {status} to {form}: {body}")),
        }
    }
}

/// An EC2 error answer.
fn error(code: &str, message: &str) -> Response {
    Response::new(
        400,
        XML,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
             <Message>{message}</Message></Error></Errors><RequestID>winipam-ec2-proxy</RequestID></Response>"
        ),
    )
}

/// The fields of an `application/x-www-form-urlencoded` body.
fn parse_form(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((decode(k), decode(v)))
        })
        .collect()
}

/// Percent-decoding (and `+` as space) of one form field.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The text of every `<tag>…</tag>` in `xml`, in order.
fn tag_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    out
}

fn first(xml: &str, tag: &str) -> Option<String> {
    tag_values(xml, tag).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_tags() {
        let form =
            parse_form(b"Action=AssignPrivateIpAddresses&PrivateIpAddress.1=10.0.0.5&X=a%2Fb+c");
        assert_eq!(form["Action"], "AssignPrivateIpAddresses");
        assert_eq!(form["PrivateIpAddress.1"], "10.0.0.5");
        assert_eq!(form["X"], "a/b c");
        let xml = "<a><privateIpAddress>1</privateIpAddress><b/><privateIpAddress>2</privateIpAddress></a>";
        assert_eq!(tag_values(xml, "privateIpAddress"), ["1", "2"]);
        assert_eq!(first(xml, "missing"), None);
    }
}
