//! Set and map elements over nf_tables netlink, without libnftables: a batch of
//! `NFT_MSG_NEWSETELEM` messages carrying keys and data already in the kernel's byte layout.
//! libnftables parses and evaluates each element of nft syntax (~7 µs apiece, most of a
//! 100,000-element load); this is what a proxier's first full sync sends for its maps.
use std::io;

use crate::wire::{
    AF_INET, NLM_F_ACK, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, Writer, error_code, messages, open,
};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NLM_F_CREATE: u16 = 0x400;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_GOTO: i32 = -4;
/// Bytes of elements per message: a message's element list is one attribute, whose length is
/// 16 bits.
const MAX_ELEMENT_LIST: usize = 60_000;

/// What an element maps its key to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementData {
    /// Nothing: an element of a set.
    None,
    /// A data map's value, in the kernel's layout (each field of a concatenation padded to 4
    /// bytes).
    Value(Vec<u8>),
    /// A verdict map's `goto CHAIN`.
    Goto(String),
}

/// Elements for one named set or map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetElements {
    /// Set or map name.
    pub set: String,
    /// Key (in the kernel's layout) and data of each element.
    pub elements: Vec<(Vec<u8>, ElementData)>,
}

/// Elements to add to sets of one table (family `ip`), as one atomic batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementBatch {
    /// Table name.
    pub table: String,
    /// Per set.
    pub sets: Vec<SetElements>,
}

impl ElementBatch {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.sets.iter().map(|s| s.elements.len()).sum()
    }

    /// True when there is no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The netlink batch and the sequence number of its last `NEWSETELEM`, or `None` when it
    /// has none.
    fn encode(&self) -> (Vec<u8>, Option<u32>) {
        let mut w = Writer::default();
        let res_id = NFNL_SUBSYS_NFTABLES;
        let begin = w.start_msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, 0, res_id);
        w.end_msg(begin);
        let mut seq = 0u32;
        for set in &self.sets {
            // (message start, element list start)
            let mut open: Option<(usize, usize)> = None;
            for (key, data) in &set.elements {
                if let Some((msg, list)) = open
                    && w.buf.len() - list + element_len(key, data) > MAX_ELEMENT_LIST
                {
                    w.end_nest(list);
                    w.end_msg(msg);
                    open = None;
                }
                if open.is_none() {
                    seq += 1;
                    // Errors come back for every message of a batch; ACKs only when asked.
                    let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;
                    let ty = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM;
                    let msg = w.start_msg(ty, flags, seq, AF_INET, 0);
                    w.attr_str(NFTA_SET_ELEM_LIST_TABLE, &self.table);
                    w.attr_str(NFTA_SET_ELEM_LIST_SET, &set.set);
                    open = Some((msg, w.start_nest(NFTA_SET_ELEM_LIST_ELEMENTS)));
                }
                element(&mut w, key, data);
            }
            if let Some((msg, list)) = open {
                w.end_nest(list);
                w.end_msg(msg);
            }
        }
        let end = w.start_msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1, 0, res_id);
        w.end_msg(end);
        (w.buf, (seq > 0).then_some(seq))
    }

    /// Adds the elements in one transaction, over a netlink socket opened in the calling
    /// thread's network namespace. All or nothing: the kernel aborts the batch on any error.
    pub fn apply(&self) -> io::Result<()> {
        let (buf, Some(last)) = self.encode() else {
            return Ok(());
        };
        let socket = open()?;
        // The kernel takes a batch from one send; the socket's buffer must hold it whole.
        let size = buf.len() + 4096;
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::SndBufForce, &size)
            .map_err(io::Error::from)?;
        socket.send(&buf, 0)?;
        wait_for_ack(&socket, last)
    }
}

/// The encoded size of one element, at most.
fn element_len(key: &[u8], data: &ElementData) -> usize {
    let attr = |payload: usize| 4 + crate::wire::align4(payload);
    let data = match data {
        ElementData::None => 0,
        ElementData::Value(v) => attr(attr(v.len())),
        ElementData::Goto(chain) => attr(attr(attr(4) + attr(chain.len() + 1))),
    };
    attr(attr(attr(key.len())) + data)
}

fn element(w: &mut Writer, key: &[u8], data: &ElementData) {
    let elem = w.start_nest(NFTA_LIST_ELEM);
    let k = w.start_nest(NFTA_SET_ELEM_KEY);
    w.attr(NFTA_DATA_VALUE, key);
    w.end_nest(k);
    match data {
        ElementData::None => {}
        ElementData::Value(v) => {
            let d = w.start_nest(NFTA_SET_ELEM_DATA);
            w.attr(NFTA_DATA_VALUE, v);
            w.end_nest(d);
        }
        ElementData::Goto(chain) => {
            let d = w.start_nest(NFTA_SET_ELEM_DATA);
            let v = w.start_nest(NFTA_DATA_VERDICT);
            w.attr(NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes());
            w.attr_str(NFTA_VERDICT_CHAIN, chain);
            w.end_nest(v);
            w.end_nest(d);
        }
    }
    w.end_nest(elem);
}

/// Reads replies until the ACK of message `last`; the first error of any message fails it.
fn wait_for_ack(socket: &netlink_sys::Socket, last: u32) -> io::Result<()> {
    loop {
        let (buf, _) = socket.recv_from_full()?;
        for (ty, seq, body) in messages(&buf) {
            if ty == NLMSG_ERROR {
                match error_code(body) {
                    0 if seq == last => return Ok(()),
                    0 => {}
                    errno => return Err(io::Error::from_raw_os_error(errno)),
                }
            } else if ty == NLMSG_DONE && seq == last {
                return Ok(());
            }
        }
    }
}

/// Whether table `name` (family `ip`) exists, in the calling thread's network namespace.
pub fn table_exists(name: &str) -> io::Result<bool> {
    let socket = open()?;
    let mut w = Writer::default();
    let ty = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE;
    let msg = w.start_msg(ty, NLM_F_REQUEST | NLM_F_ACK, 1, AF_INET, 0);
    w.attr_str(NFTA_TABLE_NAME, name);
    w.end_msg(msg);
    socket.send(&w.buf, 0)?;
    loop {
        let (buf, _) = socket.recv_from_full()?;
        for (ty, _, body) in messages(&buf) {
            if ty == NLMSG_ERROR {
                return match error_code(body) {
                    0 => Ok(true),
                    errno if errno == nix::errno::Errno::ENOENT as i32 => Ok(false),
                    errno => Err(io::Error::from_raw_os_error(errno)),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{NLA_TYPE_MASK, u16_ne};

    #[test]
    fn a_batch_is_begin_then_chunks_of_elements_then_end() {
        let batch = ElementBatch {
            table: "r8s".into(),
            sets: vec![SetElements {
                set: "m".into(),
                elements: (0..1000)
                    .map(|i| {
                        let key = u32::try_from(i).unwrap().to_be_bytes().to_vec();
                        (key, ElementData::Goto("c".repeat(100)))
                    })
                    .collect(),
            }],
        };
        let (buf, last) = batch.encode();
        let msgs: Vec<(u16, u32)> = messages(&buf).map(|(ty, seq, _)| (ty, seq)).collect();
        let newsetelem = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM;
        // 1,000 elements of ~150 bytes: three messages of at most 60,000 bytes of elements.
        assert_eq!(
            msgs,
            [
                (NFNL_MSG_BATCH_BEGIN, 0),
                (newsetelem, 1),
                (newsetelem, 2),
                (newsetelem, 3),
                (NFNL_MSG_BATCH_END, 4)
            ]
        );
        assert_eq!(last, Some(3));
        // Every element list fits its 16-bit attribute length.
        for (_, _, body) in messages(&buf) {
            let mut rest = body.get(4..).unwrap_or_default();
            while rest.len() >= 4 {
                let len = usize::from(u16_ne(rest));
                assert!(len >= 4 && len <= rest.len());
                if u16_ne(&rest[2..]) & NLA_TYPE_MASK == NFTA_SET_ELEM_LIST_ELEMENTS {
                    assert!(len < usize::from(u16::MAX));
                }
                rest = &rest[crate::wire::align4(len).min(rest.len())..];
            }
        }
    }

    #[test]
    fn an_empty_batch_sends_nothing() {
        assert_eq!(ElementBatch::default().encode().1, None);
        assert!(ElementBatch::default().apply().is_ok());
    }
}
