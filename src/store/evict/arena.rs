//! The nodes both eviction policies keep, and the intrusive doubly linked lists that order them.
//!
//! Nodes live in one `Vec` and link by index, so moving an entry from one list to another (a
//! hit promoting it, a sweep giving it a second chance) is a few integer writes with no
//! allocation, and a node is named by a small copyable [`NodeId`] that the store keeps beside
//! the entry in its map.

/// "No node": the end of a list.
pub(crate) const NIL: u32 = u32::MAX;

/// A node's index and the generation it was allocated in. A freed index is reused with a new
/// generation, so an id held past its node's removal is recognised as stale instead of naming
/// whichever entry took the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeId {
    index: u32,
    generation: u32,
}

/// Which list a node is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// On the free list: not an entry.
    Free,
    /// The adaptive policy's small queue; CLOCK's only queue.
    Small,
    /// The adaptive policy's main queue.
    Main,
}

#[derive(Debug)]
pub(crate) struct Node<T> {
    prev: u32,
    next: u32,
    generation: u32,
    pub(crate) queue: Queue,
    pub(crate) charge: u64,
    pub(crate) hash: u64,
    pub(crate) value: Option<T>,
}

/// An ordered list of nodes: `head` is the eldest (next to be evicted), `tail` the newest.
#[derive(Debug, Clone, Copy)]
pub(crate) struct List {
    pub(crate) head: u32,
    pub(crate) tail: u32,
    /// Sum of the charges of its nodes.
    pub(crate) bytes: u64,
    pub(crate) len: usize,
}

impl Default for List {
    fn default() -> Self {
        List {
            head: NIL,
            tail: NIL,
            bytes: 0,
            len: 0,
        }
    }
}

/// Every node, live or free.
#[derive(Debug)]
pub(crate) struct Arena<T> {
    nodes: Vec<Node<T>>,
    free: Vec<u32>,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Arena {
            nodes: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Arena<T> {
    /// A new node holding `value`, on no list yet.
    pub(crate) fn alloc(&mut self, value: T, charge: u64, hash: u64) -> u32 {
        let index = match self.free.pop() {
            Some(i) => {
                let node = &mut self.nodes[i as usize];
                node.generation = node.generation.wrapping_add(1);
                i
            }
            None => {
                let i = self.nodes.len() as u32;
                assert!(i != NIL, "more than 2^32 - 1 cache entries");
                self.nodes.push(Node {
                    prev: NIL,
                    next: NIL,
                    generation: 0,
                    queue: Queue::Free,
                    charge: 0,
                    hash: 0,
                    value: None,
                });
                i
            }
        };
        let node = &mut self.nodes[index as usize];
        node.charge = charge;
        node.hash = hash;
        node.value = Some(value);
        index
    }

    /// Returns a node that is on no list to the free list, with its value.
    pub(crate) fn free(&mut self, index: u32) -> Option<T> {
        let node = &mut self.nodes[index as usize];
        debug_assert_eq!(node.queue, Queue::Free, "unlink before freeing");
        self.free.push(index);
        node.value.take()
    }

    pub(crate) fn id(&self, index: u32) -> NodeId {
        NodeId {
            index,
            generation: self.nodes[index as usize].generation,
        }
    }

    /// The node's index if `id` still names a live node.
    pub(crate) fn resolve(&self, id: NodeId) -> Option<u32> {
        let node = self.nodes.get(id.index as usize)?;
        (node.generation == id.generation && node.queue != Queue::Free).then_some(id.index)
    }

    pub(crate) fn node(&self, index: u32) -> &Node<T> {
        &self.nodes[index as usize]
    }

    pub(crate) fn node_mut(&mut self, index: u32) -> &mut Node<T> {
        &mut self.nodes[index as usize]
    }

    /// Appends a node that is on no list to the newest end of `list`.
    pub(crate) fn push_back(&mut self, list: &mut List, queue: Queue, index: u32) {
        let old_tail = list.tail;
        {
            let node = &mut self.nodes[index as usize];
            node.prev = old_tail;
            node.next = NIL;
            node.queue = queue;
            list.bytes += node.charge;
        }
        if old_tail == NIL {
            list.head = index;
        } else {
            self.nodes[old_tail as usize].next = index;
        }
        list.tail = index;
        list.len += 1;
    }

    /// Takes a node off `list`, which must be the list it is on.
    pub(crate) fn unlink(&mut self, list: &mut List, index: u32) {
        let (prev, next, charge) = {
            let node = &mut self.nodes[index as usize];
            let links = (node.prev, node.next, node.charge);
            node.prev = NIL;
            node.next = NIL;
            node.queue = Queue::Free;
            links
        };
        if prev == NIL {
            list.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        list.bytes -= charge;
        list.len -= 1;
    }
}
