/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Intrusive doubly-linked lists, after systemd's list.h. */

#define LIST_HEAD(t, name)   t *name
#define LIST_FIELDS(t, name) t *name##_next, *name##_prev

#define LIST_PREPEND(name, head, item)                                                                      \
        do {                                                                                                \
                __typeof__(*(head)) **_head_ = &(head), *_item_ = (item);                                   \
                _item_->name##_next = *_head_;                                                              \
                if (_item_->name##_next)                                                                    \
                        _item_->name##_next->name##_prev = _item_;                                          \
                _item_->name##_prev = NULL;                                                                 \
                *_head_ = _item_;                                                                           \
        } while (0)

#define LIST_REMOVE(name, head, item)                                                                       \
        do {                                                                                                \
                __typeof__(*(head)) **_head_ = &(head), *_item_ = (item);                                   \
                if (_item_->name##_next)                                                                    \
                        _item_->name##_next->name##_prev = _item_->name##_prev;                             \
                if (_item_->name##_prev)                                                                    \
                        _item_->name##_prev->name##_next = _item_->name##_next;                             \
                else                                                                                        \
                        *_head_ = _item_->name##_next;                                                      \
                _item_->name##_next = _item_->name##_prev = NULL;                                           \
        } while (0)

#define LIST_FOREACH(name, i, head) for (__typeof__(*(head)) *i = (head); i; i = i->name##_next)

/* Safe against removal of i while iterating. */
#define LIST_FOREACH_SAFE(name, i, n, head)                                                                 \
        for (__typeof__(*(head)) *i = (head), *n = i ? i->name##_next : NULL; i;                            \
             i = n, n = i ? i->name##_next : NULL)
